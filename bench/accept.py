"""Case 1: accept a 100,000-row batch (validate, persist, publish).

Ours: ``worker.enqueue_batch`` (one validation pass, the orders COPYed into the ledger
in one transaction, one submit message per 100 orders over one broker connection).
Baseline: the obvious loop, per row: ``schemas.validate_row``, a ledger create of that
one order, and a ``submit_orders.delay([trade_no])``. No worker runs: the messages stay
in the broker.
"""

from __future__ import annotations

import time

from bench.common import (
    MARKET,
    Context,
    Result,
    empty_servers,
    private_servers,
    say,
    seconds,
    times,
)

NAME = "accept"
TARGET_SECONDS = 3.0  # issue 13 item 10
TARGET_SPEEDUP = 30.0


def _ours(rows: list[dict[str, str]]) -> float:
    import worker

    empty_servers()
    started = time.perf_counter()
    result = worker.enqueue_batch(MARKET, rows)
    elapsed = time.perf_counter() - started
    if result.rejected or result.accepted != len(rows):
        raise RuntimeError(f"enqueue_batch accepted {result.accepted}, rejected {result.rejected}")
    return elapsed


def _baseline(rows: list[dict[str, str]]) -> float:
    from schemas import validate_row
    from tasks.submit import submit_orders
    from worker.celery import runtime
    from worker.core.config import get_settings
    from worker.ledger import new_batch_id

    empty_servers()
    ledger = runtime.ledger()
    notify_url = get_settings().notify_url
    started = time.perf_counter()
    for row in rows:
        payout = validate_row(MARKET, row, notify_url=notify_url)
        ((trade_no, _),) = ledger.create_orders([payout], batch_id=new_batch_id(), market=MARKET)
        submit_orders.delay([trade_no])
    return time.perf_counter() - started


def _queued_messages() -> int:
    from worker.celery import runtime

    return runtime.publisher().submit_queue_length()


def run(ctx: Context) -> list[Result]:
    from worker.core.samples import sample_rows

    n = ctx.size(100_000, 10_000)
    n_base = ctx.size(10_000, 1_000)
    rows = sample_rows(MARKET, n)
    with private_servers():
        say(f"accept: baseline, per-row validate + create + .delay() for {n_base:,} rows")
        base = _baseline(rows[:n_base])
        base_messages = _queued_messages()
        say(f"accept: ours, enqueue_batch of {n:,} rows")
        ours = _ours(rows)
        messages = _queued_messages()
    scaled = base * n / n_base
    speedup = scaled / ours
    notes = [
        f"accept: the baseline ran {n_base:,} rows in {seconds(base)} "
        f"({n_base / base:,.0f} rows/s, {base_messages:,} messages) and is scaled linearly to "
        f"{n:,}; ours published {messages:,} messages (100 orders each)."
    ]
    return [
        Result(
            case=f"accept {n:,} rows (validate, persist, publish)",
            ours=seconds(ours),
            baseline=seconds(scaled),
            ratio=times(speedup) + " faster",
            target=f"< {TARGET_SECONDS:g} s, >= {TARGET_SPEEDUP:g}x",
            passed=ours < TARGET_SECONDS and speedup >= TARGET_SPEEDUP,
            notes=notes,
            raw={
                "rows": n,
                "ours_s": ours,
                "baseline_rows": n_base,
                "baseline_s": base,
                "baseline_scaled_s": scaled,
                "speedup": speedup,
                "messages": messages,
            },
        )
    ]
