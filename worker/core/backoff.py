"""Retry delays: exponential backoff with jitter, and the Redis clients' and publishing's
retries; the policy's numbers are in worker.core.defaults."""

from __future__ import annotations

import random

from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.core.defaults import MAX_DELAY


def backoff(attempt: int, *, base: float = 1.0, cap: float = MAX_DELAY) -> float:
    """Seconds before try number ``attempt + 1``: exponential, jittered over the upper
    half of the window ("equal jitter"), never sooner than half of it.

    The jitter spreads a crowd of orders that failed together, so they do not return
    to the provider together. The floor is why this is not full jitter (uniform from
    0): an order's MAX_SUBMIT_ATTEMPTS tries then span at least the sum of the
    half-windows (over a minute) of an outage before it goes to REVIEW, where full
    jitter could use them all up in a few seconds.
    """
    window = min(cap, base * 2 ** max(attempt - 1, 0))
    return random.uniform(window / 2, window)


# Every Redis command of a task (worker.celery.signals sets it in each pool process) is retried on
# a lost connection for about 25 s (0.2, 0.4, 0.8, 1.6, then 2 s apart): a Redis
# restart of a few seconds stalls the tasks instead of failing them. A transition run
# twice (its reply lost) is harmless: each is a compare-and-set. Past that a task
# fails; what it held is recovered by the submit leases, the claim lease and the
# lookup markers. The webhook receiver and the CLI keep redis-py's short default and
# answer at once that Redis is away.
REDIS_RETRY = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=15)
# Publishing (celeryconfig) rides through about as long: kombu waits 0.2 s, then
# 0.4 s longer each time, up to 1.8 s.
PUBLISH_RETRY_POLICY: dict[str, float] = {
    "max_retries": 15,
    "interval_start": 0.2,
    "interval_step": 0.4,
    "interval_max": 2.0,
}
