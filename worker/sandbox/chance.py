"""Reproducible random decisions: one generator per (seed, tradeNo, purpose).

Keying the generator by the payout's ``tradeNo`` rather than drawing from one shared
stream makes each payout's fate independent of arrival order, so a seeded run gives
the same outcomes even when many workers submit concurrently.
"""

from __future__ import annotations

import math
import random
import secrets
import threading
from dataclasses import dataclass

from worker.sandbox.config import SandboxConfig


def generator(seed: int | None, nonce: str, *parts: object) -> random.Random:
    """A generator for one decision; ``nonce`` replaces the seed when there is none."""
    key = ":".join(str(part) for part in (seed if seed is not None else nonce, *parts))
    return random.Random(key)


def new_nonce() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Fate:
    """What happens to an accepted payout, decided once at acceptance."""

    fails: bool
    settle_after: float
    drop_webhook: bool
    duplicate_webhook: bool


def fate(config: SandboxConfig, nonce: str, trade_no: str) -> Fate:
    rng = generator(config.seed, nonce, trade_no, "fate")
    # Always draw the same values in the same order, whatever the knobs say.
    fail_draw, delay_draw, drop_draw, dup_draw = (rng.random() for _ in range(4))
    low, high = config.settle_delay
    return Fate(
        fails=fail_draw < config.failure_ratio,
        settle_after=low + (high - low) * delay_draw,
        drop_webhook=drop_draw < config.drop_webhook_ratio,
        duplicate_webhook=dup_draw < config.duplicate_webhook_ratio,
    )


# The faults a payout POST can meet.
FAULT_NONE = "none"
FAULT_ERROR_BEFORE = "error_before"  # HTTP 500, nothing recorded
FAULT_ERROR_AFTER = "error_after"  # recorded (will settle), then HTTP 500
FAULT_HANG = "hang"  # recorded (will settle), answer never sent


def fault(config: SandboxConfig, nonce: str, trade_no: str, attempt: int) -> str:
    """The fault for the ``attempt``-th POST carrying ``trade_no``."""
    if config.error_ratio <= 0 and config.hang_ratio <= 0:
        return FAULT_NONE
    draw = generator(config.seed, nonce, trade_no, "post", attempt).random()
    if draw < config.error_ratio * (1 - config.error_after_record_share):
        return FAULT_ERROR_BEFORE
    if draw < config.error_ratio:
        return FAULT_ERROR_AFTER
    if draw < config.error_ratio + config.hang_ratio:
        return FAULT_HANG
    return FAULT_NONE


# A latency draw never exceeds this many medians: a stuck answer is what hang_ratio is
# for. At sigma 0.6 about 1 draw in 16,000 reaches it (ln 10 / 0.6 = 3.8 sigmas).
LATENCY_CAP_MEDIANS = 10.0


def lognormal_delay(median: float, sigma: float, rng: random.Random) -> float:
    """Seconds ``median * exp(sigma * N(0, 1))``, at most LATENCY_CAP_MEDIANS medians; 0
    when ``median`` is 0 (no distribution asked for)."""
    if median <= 0:
        return 0.0
    return min(rng.lognormvariate(math.log(median), sigma), LATENCY_CAP_MEDIANS * median)


class Latency:
    """How long each API answer waits: the fixed ``latency`` knob plus, when
    ``latency_median`` is set, an independent lognormal draw per request.

    One generator for the whole sandbox, seeded like every other decision when the
    sandbox is made; the lock guards only the draw (microseconds), never the wait that
    follows it.
    """

    def __init__(self, config: SandboxConfig, nonce: str) -> None:
        self._config = config
        self._rng = generator(config.seed, nonce, "latency")
        self._lock = threading.Lock()

    def draw(self) -> float:
        config = self._config
        if config.latency_median <= 0:
            return config.latency
        with self._lock:
            extra = lognormal_delay(config.latency_median, config.latency_sigma, self._rng)
        return config.latency + extra
