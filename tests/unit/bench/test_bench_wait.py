"""bench.common.wait_handed_over: polls rarely while many orders are open, never sleeps
past the end below POLL_DRAIN orders/s, and returns once none is open."""

from __future__ import annotations

from typing import Any

import pytest

from bench import common
from worker.core.states import State


class DrainingLedger:
    """Open orders that leave at ``rate`` per second of (fake) sleep."""

    def __init__(self, open_orders: int, rate: float) -> None:
        self.open = float(open_orders)
        self.total = open_orders
        self.rate = rate

    def sleep(self, seconds: float) -> None:
        self.open = max(0.0, self.open - self.rate * seconds)

    def count(self, state: State) -> int:
        return int(self.open) if state is State.QUEUED else 0

    def state_counts(self) -> dict[State, int]:
        return {State.QUEUED: int(self.open), State.SUCCEEDED: self.total - int(self.open)}


def test_the_poll_sleeps_in_proportion_to_the_open_orders_and_sees_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = DrainingLedger(20_000, rate=1_000)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        ledger.sleep(seconds)

    monkeypatch.setattr(common.time, "sleep", sleep)
    ledger_any: Any = ledger
    common.wait_handed_over(ledger_any, 20_000, timeout=3600)
    assert sleeps[0] == 1.0  # 20,000 open: the longest sleep
    assert min(sleeps) == 0.02  # near the end: every interval
    # 20 s of draining in far fewer polls than one every 20 ms (1,000).
    assert len(sleeps) < 200
    # Under POLL_DRAIN orders/s, no sleep outlasts the orders that were open before it.
    assert sum(sleeps) < 20 + 0.02 + 1e-9
