"""The circuit breaker: a provider account that refuses first attempts one after another
is refusing us (a bad signature, an unknown merchant, an IP not allowed, under a code we
do not know), not the payouts.

Only first attempts count: a payout never sent before has had no chance to be refused
for being a repeat. When ``rejections`` of them are refused at the top level within
``window`` seconds (by the Redis server's clock, in one Lua call: ``breaker.lua``), the
breaker trips: the submitter pauses the account (kept in PostgreSQL with who
``circuit-breaker`` and the codes seen) and leaves the order QUEUED (worker.flows.submit).
A resume of the account clears its count (worker.coordination.pause).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import redis

from worker.core import keys

_SCRIPT = Path(__file__).with_name("breaker.lua").read_text(encoding="utf-8")

WHO = "circuit-breaker"  # who the breaker's pauses say paused the account


class Breaker:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        account: str,
        *,
        rejections: int,
        window: float,
    ) -> None:
        self.account = account
        self.rejections = rejections
        self.window = window
        self.key = keys.breaker(prefix, account)
        self._script = client.register_script(_SCRIPT)

    def refused(self, trade_no: str, code: str) -> Counter[str] | None:
        """Count a first attempt refused with ``code``; the codes seen within the window
        (code -> how many) when that trips the breaker, else None."""
        if self.rejections <= 0:
            return None  # BREAKER_REJECTIONS=0: no breaker
        window_ms = max(1, round(self.window * 1000))
        reply = self._script(
            keys=[self.key], args=[window_ms, self.rejections, f"{code}|{trade_no}"]
        )
        if not isinstance(reply, list):
            return None
        members = (m.decode() if isinstance(m, bytes) else str(m) for m in reply)
        return Counter(member.rpartition("|")[0] for member in members)


def codes_text(codes: Counter[str]) -> str:
    """``9001 x4, 9002 x1``: the codes seen, the most frequent first."""
    return ", ".join(f"{code} x{n}" for code, n in codes.most_common())
