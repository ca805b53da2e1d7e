"""Case 6 (issue 2's note): ledger bulk-create throughput and Redis bytes per order.

Ours: ``Ledger.create_orders`` of 100,000 validated payouts in one batch (COPYed in,
one transaction). Baseline: the same orders created one ``create_orders([payout])``
call, and so one transaction, each. Memory is Redis's own ``INFO memory``
``used_memory`` before and after, on a fresh server: the ledger is PostgreSQL's, so
Redis should hold nothing of it (its bytes: ``python -m bench.pg_size``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from bench.common import (
    MARKET,
    NOTIFY_URL,
    Context,
    Result,
    empty_servers,
    private_servers,
    rate,
    say,
    times,
    used_memory,
)

NAME = "ledger"
TARGET_BYTES = 1500


@dataclass(frozen=True)
class Fill:
    orders: int
    seconds: float
    bytes_per_order: float
    baseline_orders: int
    baseline_seconds: float

    @property
    def rate(self) -> float:
        return self.orders / self.seconds

    @property
    def baseline_rate(self) -> float:
        return self.baseline_orders / self.baseline_seconds


@functools.cache
def fill(n: int, n_base: int) -> Fill:
    """Create ``n`` orders in bulk on fresh servers (and ``n_base`` one at a time)."""
    from schemas import validate_rows
    from worker.celery import runtime
    from worker.core.samples import sample_rows
    from worker.ledger import new_batch_id

    rows = list(enumerate(sample_rows(MARKET, n), start=1))
    valid, errors = validate_rows(MARKET, rows, notify_url=NOTIFY_URL)
    assert not errors, errors[:3]
    payouts = [payout for _, payout in valid]
    with private_servers():
        client = runtime.redis_client()
        ledger = runtime.ledger()
        say(f"ledger: baseline, {n_base:,} orders one create call each")
        started = time.perf_counter()
        for payout in payouts[:n_base]:
            ledger.create_orders([payout], batch_id=new_batch_id(), market=MARKET)
        base = time.perf_counter() - started
        empty_servers()
        time.sleep(0.2)
        before = used_memory(client)
        say(f"ledger: ours, create_orders of {n:,} orders in one batch")
        started = time.perf_counter()
        created = ledger.create_orders(payouts, batch_id=new_batch_id(), market=MARKET)
        elapsed = time.perf_counter() - started
        after = used_memory(client)
        assert len(created) == n and all(is_new for _, is_new in created)
    return Fill(n, elapsed, (after - before) / n, n_base, base)


def sizes(ctx: Context) -> tuple[int, int]:
    return ctx.size(100_000, 10_000), ctx.size(20_000, 2_000)


def bytes_result(result: Fill) -> Result:
    return Result(
        case=f"Redis bytes per order ({result.orders:,} created)",
        ours=f"{result.bytes_per_order:,.0f} B",
        target=f"< {TARGET_BYTES:,} B",
        passed=result.bytes_per_order < TARGET_BYTES,
        raw={"orders": result.orders, "bytes_per_order": result.bytes_per_order},
    )


def run(ctx: Context) -> list[Result]:
    result = fill(*sizes(ctx))
    rows = [
        Result(
            case=f"ledger bulk create ({result.orders:,} orders)",
            ours=rate(result.rate),
            baseline=rate(result.baseline_rate),
            ratio=times(result.rate / result.baseline_rate),
            notes=[
                f"ledger: baseline = one create_orders([payout]) per order, "
                f"{result.baseline_orders:,} orders; no target (issue 2 asks for the number)."
            ],
            raw={
                "orders": result.orders,
                "seconds": result.seconds,
                "orders_per_s": result.rate,
                "baseline_orders": result.baseline_orders,
                "baseline_seconds": result.baseline_seconds,
            },
        )
    ]
    if "memory" not in ctx.selected:  # the memory case shows it otherwise
        rows.append(bytes_result(result))
    return rows
