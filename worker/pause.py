"""The cluster-wide stop switch for submissions (``disburse pause`` / ``resume``).

Workers check it right before every claim and right before every POST, so within a
request's time of ``pause`` no worker sends another payout. A systemic rejection
(bad signature, unknown merchant, IP not allowed) throws the same switch.
"""

from __future__ import annotations

import redis


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
        value = self.redis.get(self.key)
        return str(value) if value is not None else None
