"""Lookup-in-flight markers: no order is looked up twice at once, whoever asks for it.

Three callers request lookups: the reconcile pass (every pending order that is due), a
submit task (orders whose outcome is unknown) and the webhook receiver (a notification
it cannot trust). Each marks an order ``{prefix}:reconcile:inflight:<tradeNo>`` (``SET
NX`` with a TTL) before publishing its lookup, and publishes only the orders it could
mark; the lookup clears the marker once it has asked. A marker not cleared (its message
died with a worker) expires after its TTL, and the next pass asks again: harmless, as
every transition is idempotent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import redis

from worker.core import keys
from worker.core.settings import Settings


class PublishLookups(Protocol):
    def __call__(self, trade_nos: Sequence[str], *, countdown: float | None = None) -> object: ...


class InFlightLookups:
    """The markers, and the publisher of the lookups they guard.

    ``task_time_limit`` bounds how long a lookup task runs (Celery kills it then; it
    covers ``LOOKUP_BUDGET``), ``pass_every`` is the reconcile interval and ``rate``
    the lookups a second the details rate limit allows.
    """

    def __init__(
        self,
        client: redis.Redis,
        publish: PublishLookups,
        *,
        prefix: str,
        task_time_limit: float,
        pass_every: float,
        rate: float,
    ) -> None:
        self.redis = client
        self.publish = publish
        self.prefix = prefix
        self.task_time_limit = task_time_limit
        self.pass_every = pass_every
        self.rate = rate

    @classmethod
    def from_settings(
        cls, client: redis.Redis, publish: PublishLookups, settings: Settings
    ) -> InFlightLookups:
        return cls(
            client,
            publish,
            prefix=settings.key_prefix,
            task_time_limit=settings.task_time_limit,
            pass_every=settings.reconcile_every,
            rate=settings.details_rate_limit.per_second,
        )

    def key(self, trade_no: str) -> str:
        return keys.lookup_in_flight(self.prefix, trade_no)

    def ttl_ms(self, backlog: int) -> int:
        """Milliseconds a lookup may stay outstanding before it is taken as lost.

        Waiting in the queue is covered by twice the time to drain ``backlog``, running by
        the task time limit. Past both, its message died with a worker.
        """
        drain = backlog / self.rate
        seconds = max(self.task_time_limit, self.pass_every * 3, 2 * drain)
        return math.ceil(seconds * 1000)

    def mark(self, trade_nos: Sequence[str], backlog: int | None = None) -> list[str]:
        """Keep the orders that have no lookup outstanding, marking them as having one.

        ``backlog``: the lookups queued with these (all of a pass's), for the TTL.
        """
        if not trade_nos:
            return []
        ttl = self.ttl_ms(len(trade_nos) if backlog is None else backlog)
        pipe = self.redis.pipeline(transaction=False)
        for trade_no in trade_nos:
            pipe.set(self.key(trade_no), "1", px=ttl, nx=True)
        return [t for t, ok in zip(trade_nos, pipe.execute(), strict=True) if ok]

    def clear(self, trade_nos: Sequence[str]) -> None:
        """The orders' lookups have run: anyone may ask about them again."""
        if trade_nos:
            self.redis.delete(*[self.key(t) for t in trade_nos])

    def publish_marked(self, trade_nos: Sequence[str], countdown: float | None = None) -> None:
        """Publish lookups of orders already marked (after ``countdown`` s)."""
        if not trade_nos:
            return
        try:
            if countdown is None:
                self.publish(trade_nos)
            else:
                self.publish(trade_nos, countdown=countdown)
        except BaseException:
            # Not published: free them for the next pass instead of for the marker's TTL.
            self.clear(trade_nos)
            raise

    def request_lookups(self, trade_nos: Sequence[str], *, countdown: float | None = None) -> int:
        """Publish lookups (after ``countdown`` s) of the orders that have none outstanding.

        Returns how many were published.
        """
        fresh = self.mark(trade_nos)
        self.publish_marked(fresh, countdown)
        return len(fresh)
