"""The "naive Celery" baseline of ``bench.slow_provider``: one task per payout.

A minimal Celery app: each task POSTs one payout with the workers' own
``VexoraClient``, on a ``--pool threads`` worker (gevent is not installed) whose
``--concurrency`` is the number of requests in flight, paced by Celery's own
``rate_limit`` (``BENCH_RATE_LIMIT``, per worker: a token bucket in its consumer).
Its broker is ``BENCH_BASELINE_BROKER`` (another database of the cluster's Redis);
the provider is ``VEXORA_BASE_URL`` as for the disburse workers.
"""

from __future__ import annotations

import contextlib
import functools
import os

from celery import Celery

from worker.core.config import load_settings
from worker.core.exceptions import DisburseError
from worker.provider.vexora import VexoraClient

QUEUE = "bench-naive"
TASK = "bench.naive.post_payout"

app = Celery("bench_naive", broker=os.environ.get("BENCH_BASELINE_BROKER", "memory://"))
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # As bench.celery_baseline: Celery's default prefetch of 4 per slot holds tasks back
    # behind the rate limit's timer; 1 gives the baseline its best chance.
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@functools.cache
def client() -> VexoraClient:
    """One client for every thread, its connection pool as large as the pool of threads."""
    settings = load_settings()
    pool_size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    account = settings.account("ID")
    return VexoraClient(
        account.base_url,
        account.merchant_no,
        account.app_secret,
        timeouts=settings.timeouts,
        pool_size=pool_size,
    )


@app.task(name=TASK, rate_limit=os.environ.get("BENCH_RATE_LIMIT", "100/s"))
def post_payout(fields: dict[str, str], trade_no: str) -> None:
    # The sandbox counts what it received; that is all this baseline measures.
    with contextlib.suppress(DisburseError):
        client().submit(fields, trade_no)
