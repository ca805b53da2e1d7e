"""Reconcile throughput: 10,000 pending orders looked up under ``DETAILS_RATE_LIMIT``.

    .venv/bin/python -m bench.reconcile [--orders N] [--limit R] [--workers W]

Starts a private cluster (Redis, the sandbox with webhooks off, celery workers; no
beat yet), then makes N orders pending the honest way: each is persisted in the
ledger, POSTed to the sandbox with its tradeNo (from this process, in threads: much
faster than through the submit rate limit) and moved QUEUED -> SUBMITTING ->
PROCESSING with the platform id the sandbox answered. The sandbox settles them
within two seconds. Then a celery beat is started and reconciliation alone brings
every order to its final state through the details API.

Measured at the sandbox (every details and query request is time-stamped on
arrival, inside the in-process sandbox): the achieved lookup rate between the first
and the last request as a fraction of the limit (goal >= 0.9), the busiest sliding
one-second window (must not exceed the limit) and the OAuth token requests.
Also a case of ``python -m bench`` (``run(ctx)``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from bench.common import Context, Result, busiest_window, say, table

if TYPE_CHECKING:
    from worker.dev.cluster import LocalCluster

NAME = "reconcile"
MARKET = "ID"
TARGET_SHARE = 0.9
DEFAULT_LIMIT = 100.0


class Arrivals:
    """Monotonic arrival times of the sandbox's details and query requests."""

    def __init__(self, local: LocalCluster) -> None:
        self.stamps: list[float] = []
        self._lock = threading.Lock()
        endpoints = local.sandbox.app._endpoints
        for name in ("details", "query"):
            endpoints[name] = self._stamped(endpoints[name])

    def _stamped(self, handler: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.stamps.append(time.monotonic())
            return handler(*args, **kwargs)

        return wrapped

    def snapshot(self) -> list[float]:
        with self._lock:
            return sorted(self.stamps)


def make_pending(count: int, threads: int = 8) -> str:
    """``count`` PROCESSING orders the sandbox really accepted; returns their batch id."""
    from schemas import validate_rows
    from worker import runtime
    from worker.dev.samples import sample_rows
    from worker.ledger import new_batch_id
    from worker.states import State

    settings = runtime.get_settings()
    ledger = runtime.ledger()
    valid, errors = validate_rows(
        MARKET, enumerate(sample_rows(MARKET, count, seed=42)), notify_url=settings.notify_url
    )
    assert not errors
    payouts = [payout for _, payout in valid]
    batch_id = new_batch_id()
    trade_nos = [t for t, _ in ledger.create_orders(payouts, batch_id=batch_id, market=MARKET)]
    client = runtime.vexora(MARKET)
    started = time.monotonic()

    def send(index: int) -> None:
        trade_no = trade_nos[index]
        ledger.transition(trade_no, State.SUBMITTING, expect=[State.QUEUED])
        result = client.submit(payouts[index].fields, trade_no)
        ledger.transition(
            trade_no,
            result.state,
            report=True,
            note="bench",
            platform_trade_no=result.platform_trade_no,
            provider_status=result.status,
        )

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, range(count)))
    say(f"reconcile: {count:,} orders PROCESSING in {time.monotonic() - started:.1f} s")
    return batch_id


def measure(orders: int, limit: float, workers: int = 2, concurrency: int = 4) -> dict[str, Any]:
    from worker import runtime
    from worker.dev.cluster import LocalCluster
    from worker.sandbox import SandboxConfig
    from worker.states import FINAL_STATES, State

    sandbox = SandboxConfig(
        webhooks=False, failure_ratio=0.1, settle_delay=(0.2, 2.0), latency=0.0, seed=5
    )
    env = {
        "DETAILS_RATE_LIMIT": f"{limit:g}/s",
        "RECONCILE_EVERY": "5",
        "RECONCILE_AFTER": "1",
        "SWEEP_AFTER": "3600",
    }
    local = LocalCluster(
        workers=workers, concurrency=concurrency, beat=False, web=False, sandbox=sandbox, env=env
    )
    saved = dict(os.environ)
    try:
        local.start()
        os.environ.update(local.env())
        runtime.reset()
        local.wait_ready(timeout=60)
        batch_id = make_pending(orders)
        time.sleep(2.5)  # every payout settled at the sandbox, every order due
        assert local.sandbox.stats()["pending"] == 0
        arrivals = Arrivals(local)
        before = local.sandbox.stats()
        started = time.monotonic()
        say(f"reconcile: beat started; {orders:,} lookups at {limit:g}/s")
        local.start_beat()
        ledger = runtime.ledger()
        deadline = started + 3 * orders / limit + 120
        while True:
            summary = ledger.batch(batch_id)
            assert summary is not None
            final = sum(n for s, n in summary.counts.items() if s in FINAL_STATES)
            if final == orders:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"not final in time: {summary.counts}")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        stats = local.sandbox.stats()
        stamps = arrivals.snapshot()
        span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
        requests = len(stamps)
        paid = local.sandbox.payouts()
        wrong = 0
        for page in ledger.iter_batch(batch_id):
            for order in ledger.get_many(page):
                assert order is not None
                expected = (
                    State.SUCCEEDED if paid[order.trade_no]["status"] == "0000" else State.FAILED
                )
                wrong += order.state is not expected
        return {
            "orders": orders,
            "limit": limit,
            "workers": f"{workers} x {concurrency}",
            "requests": requests,
            "details": stats["details_lookups"] - before["details_lookups"],
            "queries": stats["query_requests"] - before["query_requests"],
            "span_s": span,
            "achieved": (requests - 1) / span if span > 0 else 0.0,
            "busiest_window": busiest_window(stamps),
            "tokens": stats["tokens_issued"] - before["tokens_issued"],
            "unauthorized": stats["details_unauthorized"] - before["details_unauthorized"],
            "elapsed_s": elapsed,
            "wrong_state": wrong,
        }
    except BaseException:
        say(f"reconcile: failed; logs in {local.log_dir}")
        raise
    finally:
        local.close()
        os.environ.clear()
        os.environ.update(saved)
        runtime.reset()


def results(m: dict[str, Any]) -> list[Result]:
    share = m["achieved"] / m["limit"]
    raw = dict(m)
    return [
        Result(
            case=f"reconcile throughput ({m['orders']:,} pending)",
            ours=f"{m['achieved']:.1f} lookups/s = {share:.3f} of {m['limit']:g}/s",
            target=f">= {TARGET_SHARE:g} of the limit",
            passed=share >= TARGET_SHARE,
            notes=[
                f"reconcile: {m['requests']:,} details+query requests ({m['details']:,} details, "
                f"{m['queries']:,} query) over {m['span_s']:.1f} s; every order final in "
                f"{m['elapsed_s']:.1f} s from beat start; {m['wrong_state']} orders not in the "
                f"sandbox's state; workers {m['workers']}"
            ],
            raw=raw,
        ),
        Result(
            case="reconcile busiest 1 s window",
            ours=f"{m['busiest_window']} requests",
            target=f"<= {m['limit']:g}",
            passed=m["busiest_window"] <= m["limit"],
        ),
        Result(
            case="reconcile token requests",
            ours=f"{m['tokens']} (401s: {m['unauthorized']})",
            target="1 (token lifetime 1 h)",
            passed=m["tokens"] == 1,
        ),
    ]


def run(ctx: Context) -> list[Result]:
    return results(measure(ctx.size(10_000, 1_000), DEFAULT_LIMIT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--limit", type=float, default=DEFAULT_LIMIT, help="DETAILS_RATE_LIMIT/s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    m = measure(args.orders, args.limit, args.workers, args.concurrency)
    rows = [
        ("orders", f"{m['orders']:,}"),
        ("DETAILS_RATE_LIMIT", f"{m['limit']:g}/s"),
        ("achieved lookups/s", f"{m['achieved']:.1f}"),
        ("fraction of limit", f"{m['achieved'] / m['limit']:.3f} (goal >= {TARGET_SHARE:g})"),
        ("busiest 1 s window", f"{m['busiest_window']} (must be <= {m['limit']:g})"),
        ("details + query requests", f"{m['requests']:,} ({m['details']:,} + {m['queries']:,})"),
        ("token requests", f"{m['tokens']}"),
        ("lookup span / all final", f"{m['span_s']:.1f} s / {m['elapsed_s']:.1f} s"),
        ("orders not in the sandbox's state", f"{m['wrong_state']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value")
    print(f"|-{'-' * width}-|------")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value}")
    print()
    print(table(results(m)))
    return 0 if all(r.passed for r in results(m)) else 1


if __name__ == "__main__":
    sys.exit(main())
