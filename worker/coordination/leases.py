"""Leases: which QUEUED orders a worker holds in a submit message, and until when.

A submit message carries up to 100 tradeNos. When a worker receives it, their lease is
recorded (worker.celery.signals; for a message with a countdown, until it is due), by the Redis
server's clock. While its task works through them, a thread of the task renews the lease
every few seconds; when the task ends normally it gives up those it claimed, and leaves
those it handed on in a new message to the worker that receives it. A worker that dies
(SIGKILLed, out of memory, its machine gone) stops renewing, and LEASE_TTL seconds later
its orders' leases have expired: the claim check and the reconcile pass publish the ones
still QUEUED again, however long the submit queues are. The broker alone would give the
dead worker's messages back only after their visibility timeout. A task that fails leaves
its leases to expire the same way. Orders in a message still waiting in a queue have no lease: they
are not lost.
A lookup task holds its orders the same way, as it may put some back to QUEUED and
publishes them only when it is done.

Publishing an order whose task is in fact alive (a renewal came late) is harmless: the
claim (QUEUED -> SUBMITTING) lets exactly one delivery send it. Claimed orders are not
the lease's business: the claim lease and a lookup recover those.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType

import redis

from worker.core import keys
from worker.core.defaults import LEASE_TTL
from worker.core.settings import KEY_PREFIX

log = logging.getLogger(__name__)


class Leases:
    """The sorted set ``{prefix}:submit:leases``: tradeNo -> lease deadline (server ms)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = KEY_PREFIX,
        ttl: float = LEASE_TTL,
        renew_every: float | None = None,
    ) -> None:
        self.redis = client
        self.key = keys.submit_leases(prefix)
        self.ttl = ttl
        # Every third of the TTL by default: two renewals may be missed (a starved
        # thread on a busy machine) before the lease expires.
        self.renew_every = ttl / 3 if renew_every is None else renew_every

    def take(self, trade_nos: Sequence[str]) -> Lease:
        """Lease ``trade_nos`` for ``ttl`` s; use the result as a context manager to keep
        them leased while the block runs. Raises ``RedisError`` when nothing could be
        recorded (then nothing is held)."""
        self.extend(dict.fromkeys(trade_nos, 0.0))
        return Lease(self, trade_nos)

    def received(self, trade_nos: Sequence[str], *, due: datetime | None = None) -> None:
        """Lease the orders of a message a worker has just received: until ``ttl`` after
        it is ``due`` (a countdown), or after now."""
        wait = (due - datetime.now(UTC)).total_seconds() if due and due.tzinfo else 0.0
        self.extend(dict.fromkeys(trade_nos, max(0.0, wait)))

    def extend(self, seconds: Mapping[str, float], *, only_held: bool = False) -> None:
        """Lease each tradeNo until its ``seconds`` + ``ttl`` from now (``only_held``: only
        the ones still leased, so an order the pass has taken back is not leased again)."""
        if not seconds:
            return
        now = self.now_ms()
        deadlines = {t: now + int((s + self.ttl) * 1000) for t, s in seconds.items()}
        self.redis.zadd(self.key, deadlines, xx=only_held)

    def release(self, trade_nos: Sequence[str]) -> None:
        if trade_nos:
            self.redis.zrem(self.key, *trade_nos)

    def expired(self, now_ms: int) -> list[str]:
        """Every order whose lease expired by ``now_ms``."""
        return [str(t) for t in self.redis.zrangebyscore(self.key, "-inf", now_ms)]

    def forget_expired(self, now_ms: int) -> None:
        """Remove the leases :meth:`expired` returned for the same ``now_ms``, once acted
        on. A lease renewed or taken since has a deadline past ``now_ms`` (each is counted
        from a later server time): it stays."""
        self.redis.zremrangebyscore(self.key, "-inf", now_ms)

    def now_ms(self) -> int:
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


class Lease:
    """One task's lease on its orders: renewed by a thread while the ``with`` block runs.

    On a normal exit the orders are released, except those :meth:`hand_on`-ed: their
    lease is left to the worker that receives their new message (it leases them again,
    and may have done so already: releasing them would undo that). On an exception none
    is released: they expire, and the ones still QUEUED are published again.
    """

    def __init__(self, leases: Leases, trade_nos: Sequence[str]) -> None:
        self.leases = leases
        self.trade_nos = list(trade_nos)
        self._handed_on: dict[str, float] = {}
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="submit-lease", daemon=True)

    def hand_on(self, trade_nos: Sequence[str], *, due_in: float = 0.0) -> None:
        """These orders were published again, their message due in ``due_in`` s (a
        retry's countdown): keep them leased until then, plus the TTL, for the worker
        that receives the message to take over."""
        self._handed_on.update(dict.fromkeys(trade_nos, due_in))

    def __enter__(self) -> Lease:
        self._renewer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._renewer.join()
        if exc_type is None:
            self.leases.release([t for t in self.trade_nos if t not in self._handed_on])
            self.leases.extend(self._handed_on)

    def _renew(self) -> None:
        while not self._stop.wait(self.leases.renew_every):
            try:
                self.leases.extend(dict.fromkeys(self.trade_nos, 0.0), only_held=True)
            except redis.RedisError as exc:
                # Expired meanwhile, they are published again: harmless, the claim decides.
                log.warning("submit lease not renewed: %s", type(exc).__name__)
