"""The REVIEW deadline (worker.flows.deadline), on the test ledger."""

from __future__ import annotations

import pytest
import redis

from tests.unit.pending_orders import DAY, World, make_world, order_in
from worker.core.states import State
from worker.flows.deadline import ReviewDeadline
from worker.ledger import Ledger


@pytest.fixture
def world(fake_redis: redis.Redis, ledger: Ledger) -> World:
    return make_world(fake_redis, ledger)


def test_deadline_counts_from_the_first_send_not_from_creation(world: World) -> None:
    # Created (say, held for approval) long ago, but only sent a moment ago.
    trade_no = order_in(world, State.PROCESSING, ptn="p-held")
    with world.ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET created_at = created_at - interval '3 days' WHERE trade_no = %s",
            (trade_no,),
        )
    world.fake_details.status("p-held", "pending")
    world.later(3600)
    world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.PROCESSING


def test_an_order_past_its_deadline_goes_to_review_once_with_the_reason(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    deadline = ReviewDeadline(world.ledger, review_after=DAY)
    order = world.ledger.get(trade_no)
    assert order is not None
    assert not deadline.enforce(order, "still unknown")
    world.later(DAY + 1)
    assert deadline.enforce(order, "still unknown")
    assert not deadline.enforce(order, "still unknown")  # already there
    moved = world.ledger.get(trade_no)
    assert moved is not None and moved.state is State.REVIEW
    assert moved.reason is not None and moved.reason.endswith(": still unknown")
