"""The retry policy for payouts that were certainly not sent, in one place."""

from __future__ import annotations

import random

from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# Claims of one order (each a POST attempt that certainly never arrived) before a
# person looks at it: the provider has been unreachable for this order for minutes.
MAX_SUBMIT_ATTEMPTS = 8
# Retries wait at most this long (Submitter caps a provider's Retry-After to it): the
# broker's visibility timeout is derived from it (celeryconfig), or Redis would deliver
# a delayed message a second time.
MAX_DELAY = 300.0


def backoff(attempt: int, *, base: float = 1.0, cap: float = MAX_DELAY) -> float:
    """Seconds before try number ``attempt + 1``: exponential with full jitter.

    Full jitter (uniform over the whole window) spreads a crowd of orders that failed
    together, so they do not return to the provider together.
    """
    window = min(cap, base * 2 ** max(attempt - 1, 0))
    return random.uniform(window / 2, window)


# An UNKNOWN order is asked about this long after its POST: long enough for the
# provider to have recorded a request that did arrive.
QUERY_DELAY = 5.0

# Every Redis command of a task (worker.app sets it in each pool process) is retried on
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
