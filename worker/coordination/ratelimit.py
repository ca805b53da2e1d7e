"""The cluster-wide rate limiter: one GCRA schedule per provider account and endpoint, in Redis.

Every worker process, on every machine, asks the same Redis key for a slot, and the
Lua script (``ratelimit.lua``) decides by the Redis server's clock, so N workers
together never exceed the configured rate (DESIGN.md rule 5). Slots are due on a
fixed schedule one emission interval apart and may be taken a little early (the
tolerance), never saved up: no one-second window holds more than the rate. A
provider 429 pushes the shared schedule forward, which slows every worker down, not
just the one that saw it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline

from worker.core import keys
from worker.core.accounts import Account
from worker.core.exceptions import RateLimitTimeout
from worker.core.settings import KEY_PREFIX, Rate, Settings

log = logging.getLogger(__name__)

_SCRIPT = Path(__file__).with_name("ratelimit.lua").read_text(encoding="utf-8")

# How early a due slot may be taken: enough to absorb a late wake-up (typically well
# under a millisecond, a few under load) without letting slots bunch up.
MAX_TOLERANCE = 0.003
# How far ahead a take of several slots reaches (:meth:`RateLimiter.queue_take`): under
# about 500/s, only the slot due now; at higher rates, every slot due within 2 ms, where a
# round trip per slot would cost more than the slots' spacing.
TAKE_AHEAD = 0.002


@dataclass
class Slots:
    """Slots taken in one call: each may be used from its time (``time.monotonic()``) on."""

    times: deque[float] = field(default_factory=deque)

    def take(self) -> float | None:
        """The next slot's time, or None when every one is used."""
        return self.times.popleft() if self.times else None


class RateLimiter:
    """A shared schedule ``{prefix}:ratelimit:{name}`` allowing ``rate`` requests a second.

    ``headroom`` aims a little below the provider's limit. Slots granted exactly
    1/rate apart can reach the provider slightly closer together (network and
    scheduling jitter between the grant and the request), and a strict limiter on
    their side would count one too many in some window; a 3% margin keeps the
    busiest one-second window at or under the limit and costs only 3% of the rate.

    A worker told to wait wakes a little late (scheduler jitter, the round trip).
    Were the next slot counted from that late grant, every wake-up would push the
    whole schedule back and the cluster would run at ~0.93 of the rate. So the next
    slot is counted from the slot itself, and a slot may be taken up to
    ``tolerance`` early: any ``n`` grants then lie at least
    ``(n - 1) * interval - tolerance`` apart, and keeping the tolerance under the
    headroom's share of a second (``1/headroom - 1`` s) keeps every one-second
    window at or under the rate.
    """

    def __init__(
        self,
        redis: Redis,
        name: str,
        rate: Rate,
        *,
        prefix: str = KEY_PREFIX,
        headroom: float = 0.97,
        tolerance: float = MAX_TOLERANCE,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
        self.name = name
        self.rate = rate
        self.key = keys.rate_limit(prefix, name)
        # Seconds between two grants.
        self.interval = 1.0 / (rate.per_second * headroom)
        # Whole microseconds, rounded up so rounding never exceeds the rate (the
        # epsilon keeps float noise such as 100000.00000000001 from adding one).
        self._interval_us = max(1, math.ceil(self.interval * 1_000_000 - 1e-6))
        self.tolerance = min(self.interval, tolerance, 0.8 * (1 / headroom - 1))
        self._tolerance_us = int(self.tolerance * 1_000_000)
        self._ahead_us = int(TAKE_AHEAD * 1_000_000)
        self._script = redis.register_script(_SCRIPT)

    @classmethod
    def for_submit(cls, redis: Redis, settings: Settings, account: Account) -> RateLimiter:
        """The payout POSTs of one provider account, e.g. ``{prefix}:ratelimit:submit:AR``."""
        return cls(redis, f"submit:{account.name}", account.rate_limit, prefix=settings.key_prefix)

    @classmethod
    def for_details(cls, redis: Redis, settings: Settings) -> RateLimiter:
        """The details API calls and payout status queries (``DETAILS_RATE_LIMIT``)."""
        return cls(redis, "details", settings.details_rate_limit, prefix=settings.key_prefix)

    def _args(self, penalty_us: int) -> list[int]:
        return [self._interval_us, penalty_us, self._tolerance_us]

    def try_acquire(self) -> float:
        """Take a slot now and return 0.0, or return the seconds to wait (nothing taken)."""
        return self.try_reply(self._script(keys=[self.key], args=self._args(0)))

    def queue_take(self, pipe: Pipeline, count: int) -> None:
        """Add a take of the slot due now and up to ``count - 1`` more due within
        :data:`TAKE_AHEAD` to ``pipe``; read its reply with :meth:`slots`.

        A plain EVALSHA: a pipeline holding registered scripts first asks the server
        whether they exist, which would cost the round trip the pipeline saves. If the
        script is not cached (a restarted Redis), the reply is a ``NoScriptError``.
        """
        pipe.evalsha(self._script.sha, 1, self.key, *self._args(0), count, self._ahead_us)

    def slots(self, reply: Any) -> Slots:
        """The slots a take's reply gave (none when the next is not due yet; errors raise).

        Each is usable from the local time its due time less the tolerance falls on,
        counted from now, when the reply has arrived: later than the server's decision,
        so never earlier than the schedule allows.
        """
        if isinstance(reply, Exception):
            raise reply
        received = time.monotonic()
        _, now_us, taken, first_us = (int(value) for value in reply)
        early_us = first_us - self._tolerance_us - now_us
        return Slots(
            deque(
                received + max(0, early_us + i * self._interval_us) / 1_000_000
                for i in range(taken)
            )
        )

    def try_reply(self, reply: Any) -> float:
        """What a try's reply means, as :meth:`try_acquire` returns it (errors raise)."""
        if isinstance(reply, Exception):
            raise reply
        return int(reply[0]) / 1_000_000

    def acquire(self, timeout: float | None = None) -> float:
        """Block until a slot is taken; return the seconds waited.

        Raises ``RateLimitTimeout`` as soon as the next possible slot lies beyond
        ``timeout`` (the schedule only moves forward, so sleeping first would not help).
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while True:
            wait = self.try_acquire()
            now = time.monotonic()
            if wait == 0.0:
                return now - start
            if deadline is not None and now + wait > deadline:
                raise RateLimitTimeout(
                    f"rate limit {self.name!r}: no slot within {timeout:g}s "
                    f"(next in {wait:.3f}s at {self.rate})"
                )
            # A little jitter so that workers told the same wait do not all reach
            # Redis in the same instant. Kept well inside the tolerance: a slot
            # nobody claims by its due time is lost, so lateness costs rate.
            time.sleep(wait + random.uniform(0, min(self.interval * 0.01, 0.0005)))

    def penalize(self, seconds: float) -> None:
        """A provider 429: no worker gets a slot for the next ``seconds``.

        Several workers reporting the same burst of 429s do not add up: the schedule
        moves to at least ``now + seconds``.
        """
        if seconds <= 0:
            return
        self._script(keys=[self.key], args=self._args(max(1, math.ceil(seconds * 1_000_000))))
        log.warning(
            "rate limit %r: provider said 429, pausing everyone for %.2fs", self.name, seconds
        )
