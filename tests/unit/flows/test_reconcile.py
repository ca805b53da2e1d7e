"""The reconcile pass (worker.flows.reconcile) on the test ledger and fakeredis, with fake
publishers: lock, gate, scan, the sweeper and the lease sweep."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.unit.pending_orders import (
    DAY,
    World,
    backdate,
    in_flight,
    make_world,
    new_orders,
    order_in,
    set_entered,
)
from worker.core.defaults import CLAIM_LOOKUP_CHUNK, RECONCILE_PAGE
from worker.core.states import State
from worker.flows.reconcile import PassReport
from worker.ledger import Ledger

MakeWorld = Callable[..., World]


@pytest.fixture
def world(fake_redis: redis.Redis, ledger: Ledger) -> World:
    return make_world(fake_redis, ledger)


# --- the pass: lock, gate, in-flight markers, order ------------------------------------


def test_pass_fans_out_only_stale_pending_orders_oldest_first(world: World) -> None:
    old_processing = order_in(world, State.PROCESSING, ptn="p-a", age=300)
    older_unknown = order_in(world, State.UNKNOWN, age=600)
    fresh = order_in(world, State.PROCESSING, ptn="p-b", age=10)  # under RECONCILE_AFTER
    queued = order_in(world, State.QUEUED, age=600)  # not a lookup: the sweeper's
    world.queue_length.value = 1
    report = world.reconciler.run_pass()
    assert world.lookups_published.published() == [older_unknown, old_processing]
    assert (
        fresh not in world.lookups_published.published()
        and queued not in world.lookups_published.published()
    )
    assert report.published == {State.UNKNOWN: 1, State.PROCESSING: 1}
    assert in_flight(world, older_unknown) and in_flight(world, old_processing)


def test_pass_does_nothing_while_another_holds_the_lock(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-l")
    world.redis.set("t:reconcile:lock", "another-owner", px=60_000)
    report = world.reconciler.run_pass()
    assert not report.ran and "another reconcile pass is running" in str(report)
    assert world.lookups_published.calls == [] and not in_flight(world, trade_no)
    assert world.redis.get("t:reconcile:lock") == "another-owner"  # not released by us


def test_pass_releases_its_lock(world: World) -> None:
    world.reconciler.run_pass()
    assert not world.redis.exists("t:reconcile:lock")


def test_second_pass_right_after_does_nothing(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-g")
    first = world.reconciler.run_pass()
    world.redis.delete(f"t:reconcile:inflight:{trade_no}")  # even with no marker
    second = world.reconciler.run_pass()
    assert first.ran and first.lookups == 1
    assert not second.ran and "ran less than 8 s ago" in str(second)
    assert world.lookups_published.published() == [trade_no]


def test_order_is_never_fanned_out_twice_while_its_lookup_is_outstanding(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-i")
    world.fake_details.status("p-i", "pending")
    world.reconciler.run_pass()
    again = world.next_pass()
    assert again.ran and again.lookups == 0 and again.skipped_in_flight == 1
    assert world.lookups_published.published() == [trade_no]
    # The lookup runs (still pending): the next pass may ask again.
    world.lookups.run([trade_no], budget=5)
    assert not in_flight(world, trade_no)
    third = world.next_pass()
    assert third.lookups == 1
    assert world.lookups_published.published() == [trade_no, trade_no]


def test_failed_publish_frees_the_orders_for_the_next_pass(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-x")
    world.lookups_published.fail = True
    with pytest.raises(ConnectionError):
        world.reconciler.run_pass()
    assert not in_flight(world, trade_no)


def test_pass_reads_every_page_even_with_equal_scores(world: World) -> None:
    count = RECONCILE_PAGE * 2 + 7
    trade_nos = new_orders(world, count)
    set_entered(world, trade_nos, 1000)  # all at the same instant, long ago
    report = world.reconciler.run_pass()
    assert report.swept == count
    assert sorted(world.submissions.published()) == sorted(trade_nos)


# --- the sweeper ------------------------------------------------------------------------


def test_sweeper_only_when_the_submit_queue_is_empty(world: World) -> None:
    lost = order_in(world, State.QUEUED, age=400)
    world.queue_length.value = 3
    report = world.reconciler.run_pass()
    assert report.swept == 0 and world.submissions.calls == []
    assert "submit queue is not empty" in str(report)
    world.queue_length.value = 0
    assert world.next_pass().swept == 1
    assert world.submissions.published() == [lost]


def test_sweeper_republishes_only_old_queued_orders_and_not_twice(world: World) -> None:
    lost = order_in(world, State.QUEUED, age=400)
    recent = order_in(world, State.QUEUED, age=100)
    held = new_orders(world, 1, hold=True)
    backdate(world, held[0], State.HELD, 400)
    report = world.reconciler.run_pass()
    assert report.swept == 1
    assert world.submissions.published() == [lost]
    assert (
        recent not in world.submissions.published() and held[0] not in world.submissions.published()
    )
    assert world.next_pass().swept == 0  # the same orders are not republished every pass
    assert world.submissions.published() == [lost]
    assert world.state(lost) is State.QUEUED  # the claim decides; the sweeper moves nothing


def test_sweeper_is_skipped_not_the_pass_when_the_queue_length_is_unknown(world: World) -> None:
    pending = order_in(world, State.PROCESSING, ptn="p-q")
    order_in(world, State.QUEUED, age=400)
    world.queue_length.value = ConnectionError("broker unreachable")
    report = world.reconciler.run_pass()
    assert report.ran and report.swept == 0 and world.submissions.calls == []
    assert "submit queue length unknown (ConnectionError)" in str(report)
    assert world.lookups_published.published() == [pending]


def test_sweeper_waits_while_submissions_are_paused(world: World) -> None:
    order_in(world, State.QUEUED, age=400)
    world.pause.pause("operator")
    report = world.reconciler.run_pass()
    assert report.swept == 0 and "paused" in str(report)
    world.pause.resume()
    assert world.next_pass().swept == 1


def expire_lease(world: World, *trade_nos: str) -> None:
    """Lease the orders as a submit task would, and let the leases run out (it died)."""
    world.leases.take(trade_nos)
    world.redis.zadd(world.leases.key, dict.fromkeys(trade_nos, 1), xx=True)


def test_queued_orders_of_a_dead_task_are_republished_however_long_the_queue(
    world: World,
) -> None:
    stranded = new_orders(world, 3)
    claimed, done = stranded[1], stranded[2]
    assert world.ledger.claim(claimed)[0].moved
    assert world.ledger.transition(done, State.CANCELLED, source="operator").moved
    expire_lease(world, *stranded)
    world.queue_length.value = 1000  # a big batch still queued
    report = world.reconciler.run_pass()
    assert report.abandoned == 1 and report.swept == 0
    assert "1 QUEUED orders republished (their submit task died)" in str(report)
    # Only the one still QUEUED: the claim lease and a lookup recover the claimed one.
    assert world.submissions.published() == [stranded[0]]
    assert world.next_pass().abandoned == 0  # taken once, not on every pass
    assert world.submissions.published() == [stranded[0]]


def test_orders_of_a_live_task_are_left_alone(world: World) -> None:
    orders = new_orders(world, 2)
    world.leases.take(orders)  # renewed by its task
    world.queue_length.value = 1000
    assert world.reconciler.run_pass().abandoned == 0
    assert world.submissions.calls == []


def test_orders_of_a_dead_task_wait_while_paused_and_go_out_after_resume(world: World) -> None:
    (order,) = new_orders(world)
    expire_lease(world, order)
    world.pause.pause("operator")
    assert world.reconciler.run_pass().abandoned == 0 and world.submissions.calls == []
    world.pause.resume()
    assert world.next_pass().abandoned == 1
    assert world.submissions.published() == [order]


def test_orders_of_a_dead_task_not_published_are_taken_up_by_the_next_pass(world: World) -> None:
    (order,) = new_orders(world)
    expire_lease(world, order)
    world.submissions.fail = True
    with pytest.raises(ConnectionError):
        world.reconciler.run_pass()
    world.submissions.fail = False
    assert world.next_pass().abandoned == 1
    assert world.submissions.published() == [order]


# --- the claim check: abandoned claims within seconds, between passes ------------------


def test_the_check_republishes_a_dead_tasks_queued_orders_unless_paused(world: World) -> None:
    # Within seconds of the leases expiring, not at the next pass: the check runs every
    # CLAIM_CHECK_EVERY s.
    stranded = new_orders(world, 2)
    expire_lease(world, *stranded)
    world.pause.pause("operator")
    assert world.reconciler.check() == []
    assert world.submissions.calls == []  # paused: they wait for resume
    world.pause.resume()
    assert world.reconciler.check() == []
    assert sorted(world.submissions.published()) == sorted(stranded)
    world.reconciler.check()
    assert len(world.submissions.published()) == 2  # once, not on every check


def test_the_check_finds_claims_abandoned_past_the_grace_and_marks_each_once(
    world: World,
) -> None:
    ttl, grace = world.ledger.claim_ttl, world.settings.abandoned_claim_grace
    dead = order_in(world, State.SUBMITTING, age=ttl + grace + 1)  # killed moments ago
    older = order_in(world, State.SUBMITTING, age=ttl + grace + 3)
    # Expired under the grace ago: "no record" would not be believed yet; the next check.
    just = order_in(world, State.SUBMITTING, age=ttl + 1)
    live = order_in(world, State.SUBMITTING, age=5)
    renewed = order_in(world, State.SUBMITTING, age=DAY)  # old, but its worker is alive
    world.ledger.renew_claims([renewed])
    order_in(world, State.UNKNOWN, age=600)  # the pass's business, not the check's
    assert world.reconciler.abandoned_claims() == [older, dead]
    assert in_flight(world, dead) and not in_flight(world, just) and not in_flight(world, live)
    assert world.reconciler.abandoned_claims() == []  # their lookups are outstanding
    # The check looks them up itself (tasks.reconcile): it publishes nothing.
    assert world.lookups_published.calls == []
    world.later(grace)
    assert world.reconciler.abandoned_claims() == [just]


def test_a_whole_workers_claims_are_shared_out_to_lookup_tasks_of_a_few_each(
    world: World,
) -> None:
    age = world.ledger.claim_ttl + world.settings.abandoned_claim_grace + 1
    claims = [order_in(world, State.SUBMITTING, age=age + i) for i in range(12)][::-1]
    here = world.reconciler.abandoned_claims()
    assert here == claims[:CLAIM_LOOKUP_CHUNK]  # oldest first
    assert world.lookups_published.calls == [
        claims[CLAIM_LOOKUP_CHUNK : 2 * CLAIM_LOOKUP_CHUNK],
        claims[2 * CLAIM_LOOKUP_CHUNK :],
    ]
    assert all(in_flight(world, t) for t in claims)


# --- what `disburse reconcile` prints --------------------------------------------------


def test_pass_report_says_what_changed(world: World) -> None:
    order_in(world, State.SUBMITTING, age=DAY)
    order_in(world, State.UNKNOWN, age=600)
    order_in(world, State.PROCESSING, ptn="p-1", age=600)
    order_in(world, State.PROCESSING, ptn="p-2", age=600)
    order_in(world, State.QUEUED, age=600)
    text = str(world.reconciler.run_pass())
    assert "4 orders sent to lookup" in text
    assert "1 SUBMITTING with an expired claim" in text
    assert "1 UNKNOWN" in text and "2 PROCESSING" in text
    assert "1 QUEUED orders republished" in text
    again = str(world.next_pass())
    assert "no pending order is due" in again and "4 orders skipped" in again
    assert "no lost QUEUED order" in again


def test_empty_pass_report() -> None:
    text = str(PassReport())
    assert "no pending order is due" in text and "no lost QUEUED order" in text
