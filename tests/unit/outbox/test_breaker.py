"""The endpoint's breaker judges a failure rate over a window: a flaky endpoint never
trips it, a dead one does, and then gets one probe at a time, backing off to the cap."""

from __future__ import annotations

import random

import pytest

from worker.core.defaults import OUTBOX_PROBE_CAP, OUTBOX_WINDOW, OUTBOX_WINDOW_LEAST
from worker.outbox.breaker import Breaker, Change
from worker.outbox.deliveries import Endpoint


def three_failures_in_a_row(outcomes: list[bool]) -> bool:
    """What tripped the breaker before (TRIP_AFTER = 3 failures in a row)."""
    return any(not any(outcomes[i : i + 3]) for i in range(len(outcomes) - 2))


@pytest.mark.parametrize("per_second", [1.0, 20.0, 500.0])
@pytest.mark.parametrize("failing", [0.30, 0.35])
def test_a_flaky_endpoint_never_trips_it(per_second: float, failing: float) -> None:
    chance = random.Random(f"{failing}/{per_second}")
    outcomes = [chance.random() >= failing for _ in range(20_000)]
    breaker = Breaker()
    changes = [breaker.record(ok, i / per_second) for i, ok in enumerate(outcomes)]
    assert set(changes) == {None} and not breaker.open
    assert three_failures_in_a_row(outcomes)


@pytest.mark.parametrize("failing", [1.0, 0.9])
def test_a_dead_endpoint_trips_it_once_the_window_holds_enough(failing: float) -> None:
    chance = random.Random(7)
    breaker = Breaker()
    now = 1000.0
    changes = []
    while not breaker.open:
        now += 0.01
        changes.append(breaker.record(chance.random() >= failing, now))
    assert len(changes) >= OUTBOX_WINDOW_LEAST and changes[-1] is Change.TRIPPED
    assert breaker.endpoint.probes_failed == 0
    assert breaker.endpoint.retry_at is not None
    assert now + 0.5 <= breaker.endpoint.retry_at <= now + 1.0


def test_the_window_is_the_last_seconds_and_at_least_the_last_attempts() -> None:
    breaker = Breaker()
    for i in range(100):
        breaker.record(True, i * 0.01)
    # Successes a second ago outweigh the failures now...
    for i in range(OUTBOX_WINDOW_LEAST):
        assert breaker.record(False, 1.0 + i * 0.01) is None
    assert breaker.failure_rate(1.5) == pytest.approx(OUTBOX_WINDOW_LEAST / 130)
    # ... but not once they are older than the window; the failures, however old, are
    # the last attempts: the window keeps them.
    assert breaker.failure_rate(OUTBOX_WINDOW + 600) == 1.0
    assert breaker.record(False, OUTBOX_WINDOW + 600) is Change.TRIPPED


def test_too_few_attempts_say_nothing() -> None:
    breaker = Breaker()
    for i in range(OUTBOX_WINDOW_LEAST - 1):
        assert breaker.record(False, float(i)) is None
    assert breaker.failure_rate(30.0) is None and not breaker.struggling(30.0)


def test_struggling_once_most_attempts_fail() -> None:
    breaker = Breaker()
    for i in range(OUTBOX_WINDOW_LEAST):
        breaker.record(i % 2 == 0, i * 0.01)
    assert breaker.failure_rate(1.0) == 0.5 and breaker.struggling(1.0)
    breaker.record(True, 1.0)
    assert not breaker.struggling(1.0)


def test_open_one_probe_at_a_time_backing_off_to_the_cap() -> None:
    breaker = Breaker(Endpoint(0, 100.0))
    assert breaker.open
    assert not breaker.may_probe(99.0, in_flight=0)  # its wait not over
    assert not breaker.may_probe(100.0, in_flight=1)  # one in flight already
    assert breaker.may_probe(100.0, in_flight=0)

    now, waits = 100.0, []
    for _ in range(12):
        assert breaker.record(False, now, probe=True) is Change.PROBE_FAILED
        assert breaker.endpoint.retry_at is not None
        waits.append(breaker.endpoint.retry_at - now)
        now = breaker.endpoint.retry_at
    assert breaker.endpoint.probes_failed == 12
    assert 1.0 <= waits[0] <= 2.0 and 2.0 <= waits[1] <= 4.0
    assert all(OUTBOX_PROBE_CAP / 2 <= wait <= OUTBOX_PROBE_CAP for wait in waits[-5:])


def test_open_a_request_sent_before_it_tripped_moves_nothing_unless_it_succeeds() -> None:
    breaker = Breaker(Endpoint(2, 100.0))
    assert breaker.record(False, 50.0) is None
    assert breaker.endpoint == Endpoint(2, 100.0)
    assert breaker.record(True, 50.0) is Change.CLOSED
    assert not breaker.open and breaker.endpoint == Endpoint()


def test_a_success_closes_it_with_an_empty_window() -> None:
    breaker = Breaker(Endpoint(5, 10.0))
    assert breaker.record(True, 10.0, probe=True) is Change.CLOSED
    assert breaker.failure_rate(10.0) is None
    for i in range(OUTBOX_WINDOW_LEAST - 1):
        assert breaker.record(False, 10.0 + i * 0.01) is None
    assert not breaker.open
