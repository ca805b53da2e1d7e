"""Case 5: memory. Redis bytes per order, and worker RSS over 100,000 payouts.

Redis: ``INFO memory`` ``used_memory`` before and after creating 100,000 orders with
the ledger on a fresh server (shared with the ledger case: ``bench.ledger.fill``).

RSS: 2 celery worker processes (concurrency 1 each, so each a main process and one
pool child), RSS summed over each worker and its children. "Before" is taken after
a warm-up batch (lazy imports, connection pools, the first chunk); the cold value
right after start-up is reported in the note. Payouts are enqueued in batches at
no rate limit until 100,000 have reached the provider or the time cap is spent.
The Redis bytes each order holds once submitted (PROCESSING, history of three
entries, provider ids) are reported for information.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from bench import ledger as ledger_case
from bench.common import (
    MARKET,
    Context,
    Result,
    cluster,
    megabytes,
    open_states,
    process_tree_rss,
    say,
    used_memory,
    wait_handed_over,
    wait_until,
    worker_pids,
)

if TYPE_CHECKING:
    from worker.ledger import Ledger

NAME = "memory"
TARGET_GROWTH = 20 * 2**20
WORKERS = 2
BATCH = 10_000


def run(ctx: Context) -> list[Result]:
    results = []
    fill = ledger_case.fill(*ledger_case.sizes(ctx))
    results.append(ledger_case.bytes_result(fill))
    results += _rss(ctx)
    return results


def _caught_up(ledger: Ledger, batch: int) -> bool:
    return open_states(ledger) <= batch


def _rss(ctx: Context) -> list[Result]:
    import worker
    from worker.celery import runtime
    from worker.core.samples import sample_rows

    total = ctx.size(100_000, 4_000)
    cap = ctx.size(240.0, 30.0)
    warm = 1_000
    batch = min(BATCH, total)
    with cluster(workers=WORKERS) as local:
        ledger = runtime.ledger()
        client = runtime.redis_client()
        pids = worker_pids(local)
        time.sleep(1.0)
        cold = process_tree_rss(pids)
        say(f"memory: warm-up of {warm:,} payouts")
        worker.enqueue_batch(MARKET, sample_rows(MARKET, warm, seed=61, start=10**6))
        wait_handed_over(ledger, warm, timeout=120)
        time.sleep(0.5)
        before = process_tree_rss(pids)
        redis_before = used_memory(client)
        say(f"memory: up to {total:,} payouts (cap {cap:g} s), RSS before {before / 2**20:.1f} MB")
        started = time.monotonic()
        enqueued = 0
        while enqueued < total and time.monotonic() - started < cap:
            # Keep at most two batches ahead of the workers, as a steady producer would.
            wait_until(
                functools.partial(_caught_up, ledger, batch),
                timeout=600,
                interval=0.2,
                what="the workers to catch up",
            )
            size = min(batch, total - enqueued)
            worker.enqueue_batch(MARKET, sample_rows(MARKET, size, seed=62, start=enqueued))
            enqueued += size
        wait_handed_over(ledger, warm + enqueued, timeout=900)
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        after = process_tree_rss(pids)
        redis_after = used_memory(client)
        received = local.sandbox.stats()["payouts"]
    growth = after - before
    capped = enqueued < total
    note = (
        f"memory: {enqueued:,} payouts through {WORKERS} worker processes in {elapsed:.0f} s "
        f"({enqueued / elapsed:,.0f}/s, sandbox received {received:,} incl. warm-up)"
        + (f", stopped by the {cap:g} s cap before {total:,}" if capped else "")
        + f"; worker RSS cold {cold / 2**20:.1f} MB, after {warm:,} warm-up payouts "
        f"{before / 2**20:.1f} MB, at the end {after / 2**20:.1f} MB (main + pool child, "
        f"both workers)."
    )
    per_order = (redis_after - redis_before) / enqueued
    return [
        Result(
            case=f"worker RSS growth over {enqueued:,} payouts",
            ours=megabytes(growth),
            target=f"< {TARGET_GROWTH / 2**20:g} MB",
            passed=growth < TARGET_GROWTH,
            notes=[note],
            raw={
                "payouts": enqueued,
                "seconds": elapsed,
                "rss_cold": cold,
                "rss_before": before,
                "rss_after": after,
                "growth": growth,
                "capped": capped,
            },
        ),
        Result(
            case="Redis bytes per order once submitted (PROCESSING)",
            ours=f"{per_order:,.0f} B",
            raw={"bytes_per_order": per_order, "payouts": enqueued},
        ),
    ]
