"""The lookup-in-flight markers (worker.coordination.inflight) on fakeredis, with a fake
publisher."""

from __future__ import annotations

import pytest
import redis

from tests.unit.pending_orders import Recorder, World, in_flight, make_world, order_in, settings
from worker.coordination.inflight import InFlightLookups
from worker.core.settings import Rate
from worker.core.states import State
from worker.ledger import Ledger


@pytest.fixture
def world(fake_redis: redis.Redis, ledger: Ledger) -> World:
    return make_world(fake_redis, ledger)


def test_lookups_requested_outside_a_pass_are_not_fanned_out_again(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    assert world.in_flight.request_lookups([trade_no], countdown=5.0) == 1
    assert world.lookups_published.countdowns == [5.0]
    assert world.in_flight.request_lookups([trade_no]) == 0
    assert world.reconciler.run_pass().skipped_in_flight == 1
    assert world.lookups_published.published() == [trade_no]


def test_a_lookup_not_published_can_be_requested_again(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.lookups_published.fail = True
    with pytest.raises(ConnectionError):
        world.in_flight.request_lookups([trade_no])
    assert not in_flight(world, trade_no)
    world.lookups_published.fail = False
    assert world.in_flight.request_lookups([trade_no]) == 1


def test_a_cleared_order_can_be_requested_again(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    assert world.in_flight.request_lookups([trade_no]) == 1
    world.in_flight.clear([trade_no])
    assert world.in_flight.request_lookups([trade_no]) == 1


@pytest.mark.parametrize("budget", [30.0, 200.0])
def test_a_marker_outlives_a_running_lookup_task_within_its_budget(
    fake_redis: redis.Redis, budget: float
) -> None:
    # A lookup task waits up to LOOKUP_BUDGET for rate-limit slots, then makes a call.
    config = settings(lookup_budget=budget)
    markers = InFlightLookups.from_settings(fake_redis, Recorder(), config)
    assert markers.ttl_ms(backlog=1) > (budget + sum(config.timeouts)) * 1000
    assert markers.ttl_ms(backlog=1) >= config.task_time_limit * 1000


def test_a_marker_outlives_the_time_to_drain_the_pass_backlog(fake_redis: redis.Redis) -> None:
    config = settings(details_rate_limit=Rate.parse("10/s"))
    markers = InFlightLookups.from_settings(fake_redis, Recorder(), config)
    assert markers.ttl_ms(backlog=100_000) >= 2 * 10_000 * 1000  # 10,000 s to drain, twice
