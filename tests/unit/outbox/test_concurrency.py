"""The sender's limit of requests in flight: additive increase on successes, up to its
cap; halved on overload, once per round; a flaky endpoint keeps it high."""

from __future__ import annotations

import heapq
import itertools
import random

from worker.core.defaults import OUTBOX_CONCURRENCY, OUTBOX_MAX_CONCURRENCY
from worker.outbox.concurrency import Concurrency, Ticket


def test_it_starts_at_the_default_and_grows_by_one_per_success_up_to_the_cap() -> None:
    limit = Concurrency()
    assert limit.limit == OUTBOX_CONCURRENCY and limit.room(3) == OUTBOX_CONCURRENCY - 3
    for _ in range(200):
        limit.succeeded(limit.sent(limit.limit - 1))
    assert limit.limit == OUTBOX_MAX_CONCURRENCY and limit.room(OUTBOX_MAX_CONCURRENCY) == 0


def test_it_does_not_grow_while_unused() -> None:
    limit = Concurrency(start=8)
    for _ in range(50):
        limit.succeeded(limit.sent(0))  # alone in flight: nothing learnt about 9
    assert limit.limit == 8
    limit.succeeded(limit.sent(3))  # four of eight
    assert limit.limit == 9


def test_overload_halves_it_once_per_round_down_to_one() -> None:
    limit = Concurrency(start=32)
    caught = [limit.sent(i) for i in range(32)]  # a slow spell catches them all in flight
    for ticket in caught:
        limit.failed(ticket, overloaded=True)
    assert limit.limit == 16
    later = limit.sent(0)
    limit.failed(later, overloaded=True)
    assert limit.limit == 8
    for _ in range(10):
        limit.failed(limit.sent(0), overloaded=True)
    assert limit.limit == 1


def test_a_plain_refusal_changes_nothing() -> None:
    limit = Concurrency(start=20)
    limit.failed(limit.sent(19), overloaded=False)
    assert limit.limit == 20


def test_restart_is_one_request_and_a_new_round() -> None:
    limit = Concurrency(start=20)
    ticket = limit.sent(10)
    limit.restart()
    assert limit.limit == 1
    limit.failed(ticket, overloaded=True)  # sent before: counted already
    assert limit.limit == 1
    limit.succeeded(limit.sent(0))
    assert limit.limit == 2


def simulate(seconds: float) -> tuple[float, int]:
    """A sender keeping its limit full against an endpoint answering 500 to 30% of
    requests at once, never answering 5% (timed out after 10 s), the rest at once: the
    limit's mean over the run, and the requests answered."""
    chance = random.Random(23)
    limit = Concurrency()
    now, total, answered = 0.0, 0.0, 0
    order = itertools.count()
    flight: list[tuple[float, int, Ticket, str]] = []  # (ends at, order, ticket, outcome)
    while now < seconds:
        while len(flight) < limit.limit:
            roll = chance.random()
            outcome = "500" if roll < 0.30 else "timeout" if roll < 0.35 else "200"
            ends = now + (10.0 if outcome == "timeout" else 0.01)
            heapq.heappush(flight, (ends, next(order), limit.sent(len(flight)), outcome))
        ends, _, ticket, outcome = heapq.heappop(flight)
        total += limit.limit * (ends - now)
        now = ends
        answered += 1
        if outcome == "200":
            limit.succeeded(ticket)
        else:
            limit.failed(ticket, overloaded=outcome == "timeout")
    return total / now, answered


def test_a_flaky_endpoint_keeps_it_near_the_cap() -> None:
    mean, answered = simulate(120.0)
    assert mean > OUTBOX_MAX_CONCURRENCY * 0.75
    # A slot with a 5% chance of being held 10 s serves about 2 requests a second.
    assert answered > 120 * 2 * OUTBOX_MAX_CONCURRENCY * 0.7
