"""The retry policy for payouts that were certainly not sent (worker.core.backoff)."""

from __future__ import annotations

import random

import pytest

from worker.core.backoff import backoff
from worker.core.defaults import MAX_DELAY, MAX_SUBMIT_ATTEMPTS


@pytest.mark.parametrize(("attempt", "window"), [(0, 1.0), (1, 1.0), (2, 2.0), (7, 64.0)])
def test_delay_is_drawn_from_the_upper_half_of_the_window(attempt: int, window: float) -> None:
    delays = [backoff(attempt) for _ in range(500)]
    assert all(window / 2 <= delay <= window for delay in delays)
    assert len(set(delays)) > 1  # jittered, not one fixed value


def test_delay_is_capped() -> None:
    assert all(MAX_DELAY / 2 <= backoff(30) <= MAX_DELAY for _ in range(100))


def test_an_order_spends_over_a_minute_of_outage_before_it_runs_out_of_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The unluckiest draws: every delay at the bottom of its range.
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    least = sum(backoff(attempt) for attempt in range(1, MAX_SUBMIT_ATTEMPTS))
    assert least >= 60
