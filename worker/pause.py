"""Stop switches for submissions: cluster-wide (``disburse pause`` / ``resume``) and per
provider account (thrown by a systemic rejection: bad signature, unknown merchant, IP
not allowed).

The cluster-wide switch is the key ``{prefix}:paused``, an account's is
``{prefix}:paused:{account}``, so an account's switch reads both in one MGET. Workers
read it in the same round trip as every claim, and again before the POST when they had
to wait for the rate limiter, so within a request's time of a pause no worker sends
another payout on that account.
"""

from __future__ import annotations

import re
from typing import Any

import redis
from redis.client import Pipeline

from worker import keys
from worker.config import KEY_PREFIX

# What paused() calls the cluster-wide switch; account switches go by account name.
ALL = "all"


class PauseSwitch:
    """``account=None``: the cluster-wide switch, whose ``resume`` clears every switch.

    With an ``account`` name: that account's switch; it reads as paused while either
    the account or the whole cluster is paused, and ``pause`` stops that account only.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = KEY_PREFIX, account: str | None = None
    ) -> None:
        self.redis = client
        self.account = account
        self._cluster_key = keys.paused(prefix)
        self._account_prefix = keys.paused_account(prefix, "")
        self.key = self._cluster_key if account is None else self._account_prefix + account
        self._keys = [self._cluster_key] if account is None else [self._cluster_key, self.key]

    def pause(self, reason: str) -> None:
        self.redis.set(self.key, reason or "paused")

    def resume(self) -> bool:
        """Clear the switch (the cluster-wide one: every switch); True if one was set."""
        keys = [self.key] if self.account is not None else [self.key, *self._account_keys()]
        return bool(self.redis.delete(*keys))

    def reason(self) -> str | None:
        """Why submissions are paused (cluster-wide first), or None while they run."""
        return self.reason_reply(self.redis.mget(self._keys))

    def queue_reason(self, pipe: Pipeline) -> None:
        """Add a :meth:`reason` read to ``pipe``; read its reply with :meth:`reason_reply`."""
        pipe.mget(self._keys)

    @staticmethod
    def reason_reply(reply: Any) -> str | None:
        if isinstance(reply, Exception):
            raise reply
        return next((str(reason) for reason in reply if reason is not None), None)

    def paused(self) -> dict[str, str]:
        """Every switch that is set: ``{"all": reason, "<account>": reason, ...}``."""
        switches = [self._cluster_key, *self._account_keys()]
        names = [ALL, *(key[len(self._account_prefix) :] for key in switches[1:])]
        reasons = self.redis.mget(switches)
        return {n: str(r) for n, r in zip(names, reasons, strict=True) if r is not None}

    def _account_keys(self) -> list[str]:
        # An operator's command, not a hot path: SCAN finds switches of accounts that
        # a change of configuration has since renamed, too.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._account_prefix) + "*"
        return sorted(str(key) for key in self.redis.scan_iter(match=pattern, count=1000))
