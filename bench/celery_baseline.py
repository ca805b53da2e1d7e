"""The rate-limit baseline: Celery's own ``rate_limit="100/s"`` on a tiny app of its own.

One task, one payout POST per task, signed exactly as the workers sign
(``VexoraClient.submit``). Started by ``bench.ratelimit`` as N ``celery worker``
processes (concurrency 1 each), the same counts as ours. Celery enforces a task's
rate limit per worker (a token bucket in each worker's consumer), so N workers
are expected to reach about N times the limit.

Its broker is ``BENCH_BASELINE_BROKER`` (a separate database of the cluster's
Redis, so its control messages never reach the disburse workers); the provider is
``VEXORA_BASE_URL`` as for the disburse workers.
"""

from __future__ import annotations

import contextlib
import functools
import os

from celery import Celery

from worker.core.config import load_settings
from worker.core.exceptions import DisburseError
from worker.provider.vexora import VexoraClient

QUEUE = "bench-baseline"
TASK = "bench.baseline.post_payout"
RATE_LIMIT = "100/s"

app = Celery("bench_baseline", broker=os.environ.get("BENCH_BASELINE_BROKER", "memory://"))
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # As celeryconfig does for the disburse workers. With Celery's default of 4 the
    # rate-limited tasks trickled on this machine (123 of 300 in 60 s, one worker):
    # a strawman, not a baseline. With 1 it holds close to 100/s per worker.
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@functools.cache
def client() -> VexoraClient:
    return VexoraClient.from_settings(load_settings(), "ID")


@app.task(name=TASK, rate_limit=RATE_LIMIT)
def post_payout(fields: dict[str, str], trade_no: str) -> None:
    # The sandbox counts what it received; that is all this baseline measures.
    with contextlib.suppress(DisburseError):
        client().submit(fields, trade_no)
