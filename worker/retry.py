"""The retry policy, in one place: payouts certainly not sent, and payouts the provider
shows no record of."""

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

# A POST that may have arrived (UNKNOWN, or a claim whose worker is gone) is resubmitted
# with the same tradeNo once two lookups at least this many seconds apart both showed
# no record of it: a request still in flight at the provider may not show at first.
# The resubmission is safe because the provider refuses a repeated tradeNo.
NO_RECORD_GRACE = 30.0
# Resubmission rounds of an order the provider keeps showing no record of, before a
# person looks at it (REVIEW).
MAX_NO_RECORD_RESUBMITS = 3

# Celery options for every task: only a lost Redis connection is retried by Celery.
# Provider failures are classified per order inside the tasks, never by a blanket retry.
REDIS_OUTAGE_RETRY: dict[str, Any] = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 10,
}
