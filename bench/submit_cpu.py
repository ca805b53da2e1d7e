"""Diagnostic: the CPU one worker's submit path spends per payout.

    .venv/bin/python -m bench.submit_cpu [--payouts 3000]

A private cluster without workers (``bench.common.cluster(workers=0)``: PostgreSQL,
Redis, the sandbox in this process), a batch enqueued, and the process's own
``runtime.submitter()`` run over it in this thread: ``time.thread_time()`` of that
thread per payout (the sandbox's threads are not counted), after a warm-up of 300.
BENCHMARKS.md ("Submit throughput") gives its numbers for each change of the submit path.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import MARKET, cluster

WARM_UP = 300


def measure(payouts: int) -> tuple[float, float]:
    """(payouts/s, ms of this thread's CPU per payout) of one submitter over ``payouts``."""
    import worker
    from worker.celery import runtime
    from worker.core.samples import sample_rows

    with cluster(workers=0):
        result = worker.enqueue_batch(MARKET, sample_rows(MARKET, WARM_UP + payouts, seed=3))
        assert result.batch_id is not None and not result.rejected
        ledger = runtime.ledger()
        trade_nos = [t for page in ledger.iter_batch(result.batch_id) for t in page]
        submitter = runtime.submitter()
        submitter.run(trade_nos[:WARM_UP], budget=600)
        cpu, wall = time.thread_time(), time.perf_counter()
        submitter.run(trade_nos[WARM_UP:], budget=600)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return payouts / wall, 1000 * cpu / payouts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_cpu", description=__doc__)
    parser.add_argument("--payouts", type=int, default=3000)
    args = parser.parse_args(argv)
    per_second, cpu_ms = measure(args.payouts)
    print(f"{args.payouts:,} payouts: {per_second:.0f}/s, {cpu_ms:.3f} ms of CPU per payout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
