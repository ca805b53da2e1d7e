"""The million-payout day (opt-in): ``python -m bench soak [--payouts N]``.

    .venv/bin/python -m bench.soak [--payouts 1000000] [--checkpoints 10] [--batch 10000]

The whole system on one private cluster: a durable PostgreSQL, Redis, the sandbox
(zero latency, no rate ceiling, payouts settling within a second, webhooks on and
delivered to the web process), two celery workers (4 processes each) and beat
reconciling every 10 s; ``VEXORA_RATE_LIMIT`` and ``DETAILS_RATE_LIMIT`` far above
anything reachable. The payouts are enqueued through the public API in batches and
the run is cut into ``--checkpoints`` equal parts (of 100,000 for a million): each
part is enqueued and waited on until every order is final. After each part:

- payouts/s of the part (enqueue to every order final);
- worker RSS (every worker process and its pool children);
- Redis ``used_memory``;
- PostgreSQL: the database's growth since the start, per order so far;
- the slowest reconcile pass of the part (the beat task's run time in the worker logs);
- the machine's load average (other work on the machine slows a part down).

The cost per payout must not grow with the number already made: the last part's
payouts/s is compared with the first's (target: at least 0.8 of it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import (
    NO_LIMIT,
    Context,
    Result,
    cluster,
    process_tree_rss,
    say,
    table,
    used_memory,
    worker_pids,
)

if TYPE_CHECKING:
    from worker.ledger import Ledger

NAME = "soak"
MARKET = "ID"
DEFAULT_PAYOUTS = 1_000_000
TARGET_SHARE = 0.8


@dataclass
class Checkpoint:
    done: int
    per_second: float
    worker_rss: int
    redis_memory: int
    pg_per_order: float
    slowest_pass: float
    load: float  # the machine's 1-minute load average at the checkpoint


class PassTimes:
    """The reconcile passes' run times the worker logs gained since the last read."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.offsets: dict[Path, int] = {}

    def slowest_since_last(self) -> float:
        slowest = 0.0
        for log in sorted(self.log_dir.glob("worker*.log")):
            with log.open("rb") as handle:
                handle.seek(self.offsets.get(log, 0))
                text = handle.read()
                self.offsets[log] = handle.tell()
            for line in text.decode(errors="replace").splitlines():
                slowest = max(slowest, _pass_runtime(line))
        return slowest


def _pass_runtime(line: str) -> float:
    """The run time a worker log line (JSON: worker.core.logs) gives a reconcile pass, or 0."""
    if "disburse.reconcile" not in line:
        return 0.0
    try:
        data = json.loads(line).get("data") or {}
    except ValueError:
        return 0.0
    runtime = data.get("runtime") if data.get("name") == "disburse.reconcile" else None
    return float(runtime) if isinstance(runtime, int | float) else 0.0


def soak(payouts: int, checkpoints: int, batch: int) -> list[Checkpoint]:
    import worker
    from bench.common import quiet_sandbox
    from worker.celery import runtime
    from worker.core.samples import sample_rows

    sandbox = quiet_sandbox(webhooks=True, settle_delay=(0.05, 1.0), failure_ratio=0.05)
    env = {
        "DETAILS_RATE_LIMIT": NO_LIMIT,
        "RECONCILE_EVERY": "10",
        "RECONCILE_AFTER": "30",
        "SWEEP_AFTER": "600",
    }
    part = max(1, payouts // checkpoints)
    found: list[Checkpoint] = []
    with cluster(workers=2, concurrency=4, sandbox=sandbox, beat=True, web=True, env=env) as local:
        passes = PassTimes(local.log_dir)
        ledger = runtime.ledger()
        empty = _database_size()  # the schema's own pages: not the orders'
        done = 0
        while done < payouts:
            size = min(part, payouts - done)
            started = time.monotonic()
            for start in range(done, done + size, batch):
                rows = sample_rows(MARKET, min(batch, done + size - start), seed=1, start=start)
                result = worker.enqueue_batch(MARKET, rows)
                assert result.batch_id is not None and not result.rejected
            _wait_final(ledger, timeout=600 + size / 20)
            elapsed = time.monotonic() - started
            done += size
            point = Checkpoint(
                done=done,
                per_second=size / elapsed,
                worker_rss=process_tree_rss(worker_pids(local)),
                redis_memory=used_memory(runtime.redis_client()),
                pg_per_order=(_database_size() - empty) / done,
                slowest_pass=passes.slowest_since_last(),
                load=os.getloadavg()[0],
            )
            found.append(point)
            say(
                f"soak: {done:,} payouts; {point.per_second:.0f}/s; workers "
                f"{megabytes(point.worker_rss)}; Redis {megabytes(point.redis_memory)}; "
                f"PostgreSQL {point.pg_per_order:.0f} B/order; slowest pass "
                f"{point.slowest_pass:.2f} s; load {point.load:.1f}"
            )
    return found


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def _wait_final(ledger: Ledger, timeout: float) -> None:
    """Until no order is open (every one final), polling the index of open orders."""
    deadline = time.monotonic() + timeout
    while sum(n for n, _ in ledger.open_states().values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"orders still open: {ledger.open_states()}")
        time.sleep(0.5)


def _database_size() -> int:
    from worker.celery import runtime

    with runtime.pool().connection() as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def results(points: list[Checkpoint]) -> list[Result]:
    first, last = points[0], points[-1]
    share = last.per_second / first.per_second
    notes = [
        " | ".join(
            (
                f"{p.done:,}",
                f"{p.per_second:.0f}/s",
                f"workers {megabytes(p.worker_rss)}",
                f"Redis {megabytes(p.redis_memory)}",
                f"PG {p.pg_per_order:.0f} B/order",
                f"slowest pass {p.slowest_pass:.2f} s",
                f"load {p.load:.1f}",
            )
        )
        for p in points
    ]
    raw = {"checkpoints": [vars(p) for p in points]}
    total = f"{last.done:,} payouts"
    return [
        Result(
            case=f"soak {total}: payouts/s, last part vs first",
            ours=f"{last.per_second:.0f}/s",
            baseline=f"{first.per_second:.0f}/s (first part)",
            ratio=f"{share:.2f}",
            target=f">= {TARGET_SHARE:g}",
            passed=share >= TARGET_SHARE,
            notes=notes,
            raw=raw,
        ),
        Result(
            case=f"soak {total}: worker RSS, end vs start",
            ours=megabytes(last.worker_rss),
            baseline=megabytes(first.worker_rss),
            ratio=f"{last.worker_rss / first.worker_rss:.2f}",
        ),
        Result(
            case=f"soak {total}: Redis memory, end vs start",
            ours=megabytes(last.redis_memory),
            baseline=megabytes(first.redis_memory),
        ),
        Result(
            case=f"soak {total}: PostgreSQL bytes per order, end vs start",
            ours=f"{last.pg_per_order:.0f}",
            baseline=f"{first.pg_per_order:.0f}",
            ratio=f"{last.pg_per_order / first.pg_per_order:.2f}",
        ),
        Result(
            case=f"soak {total}: slowest reconcile pass, end vs start",
            ours=f"{last.slowest_pass:.2f} s",
            baseline=f"{first.slowest_pass:.2f} s",
        ),
    ]


def run(ctx: Context) -> list[Result]:
    payouts = ctx.payouts or ctx.size(DEFAULT_PAYOUTS, 20_000)
    return results(soak(payouts, checkpoints=10, batch=10_000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--payouts", type=int, default=DEFAULT_PAYOUTS)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10_000, help="payouts per enqueued batch")
    args = parser.parse_args(argv)
    if args.payouts < args.checkpoints:
        parser.error("--payouts must be at least --checkpoints")
    found = results(soak(args.payouts, args.checkpoints, args.batch))
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
