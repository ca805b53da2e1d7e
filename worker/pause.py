"""Stop switches for submissions: cluster-wide (``disburse pause`` / ``resume``) and per
provider account (thrown by a systemic rejection: bad signature, unknown merchant, IP
not allowed).

Every switch is a field of one Redis hash, so an account's switch reads its own field
and the cluster-wide one in one command. Workers read it in the same round trip as
every claim, and again before the POST when they had to wait for the rate limiter, so
within a request's time of a pause no worker sends another payout on that account.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline

# The cluster-wide switch's field; account fields are account names (markets, e.g. "AR").
ALL = "all"


class PauseSwitch:
    """``account=None``: the cluster-wide switch, whose ``resume`` clears every switch.

    With an ``account`` name: that account's switch; it reads as paused while either
    the account or the whole cluster is paused, and ``pause`` stops that account only.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "disburse", account: str | None = None
    ) -> None:
        self.redis = client
        self.key = f"{prefix}:pause"
        self.account = account
        self._field = account or ALL
        self._fields = [ALL] if account is None else [ALL, account]

    def pause(self, reason: str) -> None:
        self.redis.hset(self.key, self._field, reason or "paused")

    def resume(self) -> bool:
        """Clear the switch (the cluster-wide one: every switch); True if one was set."""
        if self.account is None:
            return bool(self.redis.delete(self.key))
        return bool(self.redis.hdel(self.key, self._field))

    def reason(self) -> str | None:
        """Why submissions are paused (cluster-wide first), or None while they run."""
        return self.reason_reply(self.redis.hmget(self.key, self._fields))

    def queue_reason(self, pipe: Pipeline) -> None:
        """Add a :meth:`reason` read to ``pipe``; read its reply with :meth:`reason_reply`."""
        pipe.hmget(self.key, self._fields)

    @staticmethod
    def reason_reply(reply: Any) -> str | None:
        if isinstance(reply, Exception):
            raise reply
        return next((str(reason) for reason in reply if reason is not None), None)

    def paused(self) -> dict[str, str]:
        """Every switch that is set: ``{"all": reason, "<account>": reason, ...}``."""
        return {str(k): str(v) for k, v in self.redis.hgetall(self.key).items()}
