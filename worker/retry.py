"""The retry policy for payouts that were certainly not sent, in one place."""

from __future__ import annotations

import random
from typing import Any

import redis

# Claims of one order (each a POST attempt that certainly never arrived) before a
# person looks at it: the provider has been unreachable for this order for a minute
# or two (the delays between them add up to 64-127 s, see ``backoff``).
MAX_SUBMIT_ATTEMPTS = 8
# Retries wait at most this long; it must stay far below the broker's visibility
# timeout, or Redis would deliver the delayed message a second time.
MAX_DELAY = 300.0


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


# An UNKNOWN order is asked about this long after its POST: long enough for the
# provider to have recorded a request that did arrive.
QUERY_DELAY = 5.0

# Celery options for every task: only a lost Redis connection is retried by Celery.
# Provider failures are classified per order inside the tasks, never by a blanket retry.
REDIS_OUTAGE_RETRY: dict[str, Any] = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 10,
}
