"""The cluster-wide stop switch for submissions (``disburse pause`` / ``resume``).

Workers read it in the same round trip as every claim, and again before the POST
when they had to wait for the rate limiter, so within a request's time of
``pause`` no worker sends another payout. A systemic rejection
(bad signature, unknown merchant, IP not allowed) throws the same switch.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline


class PauseSwitch:
    def __init__(self, client: redis.Redis, prefix: str = "disburse") -> None:
        self.redis = client
        self.key = f"{prefix}:paused"

    def pause(self, reason: str) -> None:
        self.redis.set(self.key, reason or "paused")

    def resume(self) -> bool:
        """Clear the switch; True if it was set."""
        return bool(self.redis.delete(self.key))

    def reason(self) -> str | None:
        """Why submissions are paused, or None while they run."""
        return self.reason_reply(self.redis.get(self.key))

    def queue_reason(self, pipe: Pipeline) -> None:
        """Add a :meth:`reason` read to ``pipe``; read its reply with :meth:`reason_reply`."""
        pipe.get(self.key)

    @staticmethod
    def reason_reply(reply: Any) -> str | None:
        if isinstance(reply, Exception):
            raise reply
        return str(reply) if reply is not None else None
