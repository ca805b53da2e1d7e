"""Reconcile: 10,000 pending orders at ``DETAILS_RATE_LIMIT=20/s``, the list walk beside
single lookups, in one run.

    .venv/bin/python -m bench.reconcile [--orders N] [--baseline-orders N] [--limit R]

Each way gets a private cluster (Redis, a durable PostgreSQL, the sandbox with its
webhooks off, two celery workers; beat started once the orders are due). The orders
are made pending the honest way (worker.dev.pending: persisted, claimed, POSTed to the
sandbox, its answer applied) and settled at the sandbox; then reconciliation alone
brings every one to its final state. "walk" is the default (``RECONCILE_WALK_AT`` 50:
the pass walks the paged list); "single" turns the walk off (``RECONCILE_WALK_AT=0``:
one details request per order, as before issue 16).

Measured at the sandbox (every list, details and query request time-stamped on
arrival): requests, orders settled per request, the busiest one-second window (must
not exceed the limit), the time from beat start until every order is final (goal:
under 40 s for the walk), and orders not in the state the sandbox settled them in.

Then, on the walk's cluster, the threshold: N orders made due under 1,200 younger rows
(the last 60 s of a 20 payouts/s flow, not yet due at the default
``RECONCILE_AFTER``), each walked once: its list requests beside the N single
lookups the same orders cost.
Also a case of ``python -m bench`` (``run(ctx)``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from bench.common import Context, Result, busiest_window, cluster, say, table

if TYPE_CHECKING:
    from worker.dev.cluster import LocalCluster

NAME = "reconcile"
DEFAULT_LIMIT = 20.0
TARGET_SECONDS = 40.0
TARGET_PER_REQUEST = 20.0
YOUNG_ROWS = 1_200  # 20 payouts/s x RECONCILE_AFTER 60 s
THRESHOLD_SIZES = (10, 25, 50, 100, 200)


class Arrivals:
    """Monotonic arrival times of the sandbox's list, details and query requests."""

    def __init__(self, local: LocalCluster) -> None:
        self.stamps: list[float] = []
        self._lock = threading.Lock()
        endpoints = local.sandbox.app._endpoints
        for name in ("listing", "details", "query"):
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


def measure(
    orders: int, limit: float, *, walk: bool, threshold: bool = False, workers: int = 2
) -> dict[str, Any]:
    """One way on its own cluster; with ``threshold`` (the walk), the sweep after it."""
    from worker.celery import runtime
    from worker.core.states import FINAL_STATES, State
    from worker.dev.pending import make_pending
    from worker.sandbox import SandboxConfig

    sandbox = SandboxConfig(
        webhooks=False, failure_ratio=0.1, settle_delay=(0.0, 0.5), latency=0.0, seed=5
    )
    env = {
        "DETAILS_RATE_LIMIT": f"{limit:g}/s",
        "RECONCILE_EVERY": "5",
        "RECONCILE_AFTER": "1",
        "SWEEP_AFTER": "3600",
        "RECONCILE_WALK_AT": "50" if walk else "0",
    }
    way = "walk" if walk else "single"
    with cluster(workers=workers, concurrency=4, sandbox=sandbox, env=env) as local:
        made = time.monotonic()
        batch_id, _ = make_pending(orders)
        say(f"reconcile/{way}: {orders:,} orders PROCESSING in {time.monotonic() - made:.0f} s")
        local.sandbox.settle_now()
        time.sleep(1.5)  # every order due (RECONCILE_AFTER)
        arrivals = Arrivals(local)
        before = local.sandbox.stats()
        started = time.monotonic()
        local.start_beat()
        ledger = runtime.ledger()
        deadline = started + 3 * orders / limit + 180
        while True:
            summary = ledger.batch(batch_id)
            assert summary is not None
            if sum(n for s, n in summary.counts.items() if s in FINAL_STATES) == orders:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"not final in time: {summary.counts}")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        stats = local.sandbox.stats()
        stamps = arrivals.snapshot()
        paid = local.sandbox.payouts()
        wrong = 0
        for page in ledger.iter_batch(batch_id):
            for order in ledger.get_many(page):
                assert order is not None
                settled = State.SUCCEEDED if paid[order.trade_no]["status"] == "0000" else None
                wrong += order.state is not (settled or State.FAILED)
        moved = {k: stats[k] - before[k] for k in ("list_requests", "details_lookups")}
        moved["query_requests"] = stats["query_requests"] - before["query_requests"]
        found = {
            "way": way,
            "orders": orders,
            "limit": limit,
            **moved,
            "requests": len(stamps),
            "per_request": orders / max(1, len(stamps)),
            "busiest_window": busiest_window(stamps),
            "elapsed_s": elapsed,
            "wrong_state": wrong,
        }
        if threshold:
            local.beats[0].terminate()  # the sweep's passes are its own
            found["threshold"] = sweep(local)
        return found


def sweep(local: LocalCluster) -> list[tuple[int, int, int]]:
    """(N, list requests of a walk over N due orders under YOUNG_ROWS younger rows, the
    orders it left to single lookups), for each N of THRESHOLD_SIZES."""
    from worker.celery import runtime
    from worker.dev.pending import make_pending

    walk = runtime.reconciler().walk
    assert walk is not None
    rows = []
    for index, n in enumerate(THRESHOLD_SIZES):
        _, trade_nos = make_pending(n, start=100_000 * (index + 1))
        local.sandbox.settle_now()
        local.sandbox.details_api.arrive_elsewhere(YOUNG_ROWS)
        orders = [o for o in runtime.ledger().get_many(trade_nos) if o is not None]
        time.sleep(0.01)  # the walk begins after they entered PROCESSING
        before = local.sandbox.stats()["list_requests"]
        report = walk.run(orders, keep_lock=lambda: True)
        pages = local.sandbox.stats()["list_requests"] - before
        rows.append((n, pages, len(report.fall_back)))
        say(f"reconcile/threshold: {n} due orders: {pages} pages, {report.why}")
    return rows


def results(walk: dict[str, Any], single: dict[str, Any]) -> list[Result]:
    def line(m: dict[str, Any]) -> str:
        return (
            f"{m['way']}: {m['orders']:,} orders, {m['requests']:,} requests "
            f"({m['list_requests']:,} list, {m['details_lookups']:,} details, "
            f"{m['query_requests']:,} query), all final in {m['elapsed_s']:.1f} s, busiest "
            f"1 s window {m['busiest_window']}, {m['wrong_state']} orders not as settled"
        )

    found = [
        Result(
            case=f"reconcile {walk['orders']:,} pending at {walk['limit']:g}/s: all final",
            ours=f"{walk['elapsed_s']:.1f} s",
            baseline=f"{single['elapsed_s']:.1f} s ({single['orders']:,} orders, single)",
            ratio=f"{single['elapsed_s'] / walk['elapsed_s']:.1f}x faster",
            target=f"< {TARGET_SECONDS:g} s",
            passed=walk["elapsed_s"] < TARGET_SECONDS and walk["wrong_state"] == 0,
            notes=[line(walk), line(single)],
            raw={"walk": walk, "single": single},
        ),
        Result(
            case="reconcile orders settled per details request",
            ours=f"{walk['per_request']:.1f}",
            baseline=f"{single['per_request']:.2f} (single)",
            target=f">= {TARGET_PER_REQUEST:g}",
            passed=walk["per_request"] >= TARGET_PER_REQUEST,
        ),
        Result(
            case="reconcile busiest 1 s window (walk, single)",
            ours=f"{walk['busiest_window']}",
            baseline=f"{single['busiest_window']}",
            target=f"<= {walk['limit']:g}",
            passed=max(walk["busiest_window"], single["busiest_window"]) <= walk["limit"],
        ),
    ]
    for n, pages, left in walk.get("threshold", []):
        found.append(
            Result(
                case=f"reconcile threshold: {n} due under {YOUNG_ROWS:,} younger rows",
                ours=f"{pages + left} requests (walk: {pages} pages + {left} lookups)",
                baseline=f"{n} requests (single)",
                ratio=f"{n / (pages + left):.2f}",
                notes=[] if n != THRESHOLD_SIZES[-1] else ["ratio > 1: the walk is cheaper"],
            )
        )
    return found


def run(ctx: Context) -> list[Result]:
    orders = ctx.size(10_000, 1_000)
    walk = measure(orders, DEFAULT_LIMIT, walk=True, threshold=True)
    single = measure(ctx.size(10_000, 500), DEFAULT_LIMIT, walk=False)
    return results(walk, single)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument(
        "--baseline-orders", type=int, help="orders for single lookups (default: --orders)"
    )
    parser.add_argument("--limit", type=float, default=DEFAULT_LIMIT, help="DETAILS_RATE_LIMIT/s")
    args = parser.parse_args(argv)
    walk = measure(args.orders, args.limit, walk=True, threshold=True)
    single = measure(args.baseline_orders or args.orders, args.limit, walk=False)
    found = results(walk, single)
    print(table(found))
    return 0 if all(r.passed is not False for r in found) else 1


if __name__ == "__main__":
    sys.exit(main())
