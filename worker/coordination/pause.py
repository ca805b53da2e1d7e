"""Stop switches for submissions: cluster-wide (``disburse pause`` / ``resume``) and per
provider account (thrown by a systemic rejection: bad signature, unknown merchant, IP
not allowed, or by the circuit breaker: worker.coordination.breaker).

PostgreSQL holds the switches (worker.coordination.pause_store: who, why, since); Redis caches them
for the submit path. The cluster-wide switch is the key ``{prefix}:paused``, an
account's is ``{prefix}:paused:{account}``, so an account's switch reads both in one
MGET, together with the key ``{prefix}:paused-loaded`` that says the cache was filled
from PostgreSQL. Workers read it in the same round trip as every claim, and again
before the POST when they had to wait for the rate limiter, so within a request's time
of a pause no worker sends another payout on that account.

A Redis that lost its keys (wiped, restarted without them) has no ``paused-loaded``:
the first reader then fills the cache from PostgreSQL before it answers, and a pause
state it cannot read counts as paused. Every change of a switch bumps
``{prefix}:paused-generation`` in the transaction that writes the cache, and a reader
fills the cache only if no change came between its read of PostgreSQL and its write
(WATCH), so a pause or resume racing a refill is never undone by it.

Without a store (tests of the Redis side alone) the switches live in Redis only.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
import redis
from psycopg_pool import PoolTimeout
from redis.client import Pipeline

from worker.coordination.pause_store import PauseRecord, PauseStore
from worker.core import keys
from worker.core.settings import KEY_PREFIX

log = logging.getLogger(__name__)

# What paused() calls the cluster-wide switch; account switches go by account name.
ALL = "all"

# Times a refill of the cache starts over when a pause or resume comes in between.
_REFILL_TRIES = 5


class PauseSwitch:
    """``account=None``: the cluster-wide switch, whose ``resume`` clears every switch.

    With an ``account`` name: that account's switch; it reads as paused while either
    the account or the whole cluster is paused, and ``pause`` stops that account only.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = KEY_PREFIX,
        account: str | None = None,
        store: PauseStore | None = None,
    ) -> None:
        self.redis = client
        self.account = account
        self.store = store
        self.scope = ALL if account is None else account
        self._cluster_key = keys.paused(prefix)
        self._account_prefix = keys.paused_account(prefix, "")
        self._loaded = f"{prefix}:paused-loaded"
        self._generation = f"{prefix}:paused-generation"
        # The circuit breaker's counts (worker.coordination.breaker): a resume starts them afresh.
        self._breakers = keys.breaker(prefix, "" if account is None else account)
        self.key = self._cluster_key if account is None else self._account_prefix + account
        switches = [self._cluster_key] if account is None else [self._cluster_key, self.key]
        # With a store, the cache's marker is read first, in the same MGET.
        self._keys = [self._loaded, *switches] if store is not None else switches

    def pause(self, reason: str, who: str = "unknown") -> tuple[PauseRecord, bool]:
        """Set the switch unless it is set: the pause in force, and True when this call
        set it. A second pause keeps the first one's reason, who and since."""
        reason = reason or "paused"
        if self.store is None:
            created = bool(self.redis.set(self.key, reason, nx=True))
            return PauseRecord(self.scope, str(self.redis.get(self.key) or reason), who), created
        record, created = self.store.pause(self.scope, reason, who)
        # Also when it was set already: a cache that missed it (Redis down at the time)
        # catches up.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key, record.reason)
            pipe.incr(self._generation)
            pipe.execute()
        return record, created

    def resume(self, who: str = "unknown") -> bool:
        """Clear the switch (the cluster-wide one: every switch); True if one was set."""
        if self.account is not None:
            names, breakers = [self.key], [self._breakers]
        else:
            names, breakers = [self.key, *self._account_keys()], self._breaker_keys()
        lifted = False
        if self.store is not None:
            scopes = None if self.account is None else [self.account]
            lifted = bool(self.store.resume(scopes, who))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*names)
            pipe.incr(self._generation)
            if breakers:
                pipe.delete(*breakers)
            deleted = pipe.execute()[0]
        return lifted or bool(deleted)

    def refresh(self) -> None:
        """Have the cache filled from PostgreSQL again (by the next reader): a pause whose
        write to Redis failed (Redis unreachable at the time) is cached within a reconcile
        pass, which calls this."""
        if self.store is not None:
            self.redis.delete(self._loaded)

    def reason(self) -> str | None:
        """Why submissions are paused (cluster-wide first), or None while they run."""
        return self.reason_reply(self.redis.mget(self._keys))

    def queue_reason(self, pipe: Pipeline) -> None:
        """Add a :meth:`reason` read to ``pipe``; read its reply with :meth:`reason_reply`."""
        pipe.mget(self._keys)

    def reason_reply(self, reply: Any) -> str | None:
        if isinstance(reply, Exception):
            raise reply
        if self.store is not None:
            if reply[0] is None:
                return self._refill()
            reply = reply[1:]
        return next((str(reason) for reason in reply if reason is not None), None)

    def paused(self) -> dict[str, str]:
        """Every switch that is set: ``{"all": reason, "<account>": reason, ...}``."""
        return {scope: record.reason for scope, record in self.records().items()}

    def records(self) -> dict[str, PauseRecord]:
        """Every switch that is set, with who set it and since when (from PostgreSQL;
        a switch found in Redis alone, set by a version before, has who ``unknown``)."""
        switches = [self._cluster_key, *self._account_keys()]
        names = [ALL, *(key[len(self._account_prefix) :] for key in switches[1:])]
        reasons = self.redis.mget(switches)
        cached = {
            n: PauseRecord(n, str(r), "unknown")
            for n, r in zip(names, reasons, strict=True)
            if r is not None
        }
        if self.store is None:
            return cached
        return {**cached, **self.store.active()}

    def _refill(self) -> str | None:
        """Fill the cache from PostgreSQL; this switch's reason. Paused (with why) while
        PostgreSQL cannot be read."""
        assert self.store is not None
        try:
            for _ in range(_REFILL_TRIES):
                with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(self._generation)
                        active = self.store.active()
                        pipe.multi()
                        for scope, record in active.items():
                            pipe.set(self._key_of(scope), record.reason)
                        pipe.set(self._loaded, "1")
                        pipe.execute()
                    except redis.WatchError:
                        continue  # a pause or resume came in between: read again
                log.info("pause cache filled from PostgreSQL: %d pauses", len(active))
                scopes = [ALL] if self.account is None else [ALL, self.account]
                return next((active[s].reason for s in scopes if s in active), None)
        except (psycopg.Error, PoolTimeout) as exc:
            log.error("pause state unknown, submissions held: %s", type(exc).__name__)
            return f"pause state unknown (PostgreSQL: {type(exc).__name__}); held until known"
        return "pause state changing while read; held until known"

    def _key_of(self, scope: str) -> str:
        return self._cluster_key if scope == ALL else self._account_prefix + scope

    def _breaker_keys(self) -> list[str]:
        return self._scan(self._breakers)

    def _account_keys(self) -> list[str]:
        return self._scan(self._account_prefix)

    def _scan(self, prefix: str) -> list[str]:
        # An operator's command, not a hot path: SCAN finds switches of accounts that
        # a change of configuration has since renamed, too.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        return sorted(str(key) for key in self.redis.scan_iter(match=pattern, count=1000))
