"""The list walk (worker.flows.walk) in the reconcile pass, on the test ledger and fakeredis,
with a fake paged list whose rows shift down as payouts arrive."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from tests.unit.pending_orders import FakeLimiter, World, make_world, order_in
from worker.core.exceptions import OutcomeUnknown
from worker.core.states import State
from worker.flows.reconcile import PassReport, Reconciler
from worker.flows.walk import ListWalk
from worker.ledger import Ledger
from worker.provider.details import Throttle
from worker.provider.disbursements import DEFAULT_PER_PAGE, ListPage, parse_disbursement

HOUR_MS = 3_600_000


class FakeList:
    """The provider's list: rows newest first, ``arrivals`` new ones before every page."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.newest_first: list[dict[str, Any]] = []
        self.requests: list[int] = []
        self.arrivals = 0
        self.fail_at: int | None = None
        self.malformed: dict[int, int] = {}  # page -> rows on it that are malformed
        self._others = 0

    def add(self, ptn: str, status: str, *, age_ms: int = 0) -> None:
        """A row under the newest ones (so add the newest first)."""
        row = {"transaction_id": ptn, "status": status, "post_timestamp": self.now_ms - age_ms}
        self.newest_first.append(row)

    def arrive(self, count: int) -> None:
        for _ in range(count):
            self._others += 1
            row = {"transaction_id": f"other{self._others}", "status": "pending"}
            self.newest_first.insert(0, {**row, "post_timestamp": self.now_ms})

    def page(self, number: int, *, throttle: Throttle) -> ListPage:
        throttle()
        self.requests.append(number)
        if number == self.fail_at:
            raise OutcomeUnknown(f"list page {number}: provider error (HTTP 502)")
        self.arrive(self.arrivals)
        start = (number - 1) * DEFAULT_PER_PAGE
        raw = self.newest_first[start : start + DEFAULT_PER_PAGE]
        bad = self.malformed.get(number, 0)
        rows = tuple(parse_disbursement(r) for r in raw[bad:])
        more = start + DEFAULT_PER_PAGE < len(self.newest_first)
        return ListPage(number, rows, ("malformed",) * bad, more)


class Skipped:
    def __init__(self) -> None:
        self.count = 0

    def list_rows_skipped(self, count: int) -> None:
        self.count += count


def walking(world: World, listing: FakeList, limiter: FakeLimiter | None = None) -> Any:
    """A reconciler of ``world`` that walks ``listing`` (and its walk's metrics)."""
    skipped = Skipped()
    walk = ListWalk(
        listing,
        limiter or world.limiter,
        world.lookups.apply_details,
        world.ledger,
        world.redis,
        skipped,
        prefix="t",
        budget=5.0,
        cursor_ttl=100.0,
    )
    reconciler = Reconciler(
        world.ledger,
        world.in_flight,
        world.pause,
        world.leases,
        world.redis,
        world.settings,
        publish_submissions=world.submissions,
        submit_queue_length=world.queue_length,
        walk=walk,
    )
    return reconciler, skipped


def next_pass(world: World, reconciler: Reconciler) -> PassReport:
    world.redis.delete("t:reconcile:gate")
    return reconciler.run_pass()


@pytest.fixture
def world(ledger: Ledger) -> World:
    return make_world(fakeredis.FakeRedis(), ledger)


def pending(world: World, count: int, prefix: str = "p") -> list[str]:
    return [order_in(world, State.PROCESSING, ptn=f"{prefix}{i}") for i in range(count)]


def listed_pending(world: World, count: int) -> tuple[list[str], FakeList]:
    """``count`` PROCESSING orders, p0 the oldest, all settled on a list of their own."""
    orders = pending(world, count)
    listing = FakeList(world.ledger.now_ms())
    for i in reversed(range(count)):  # the oldest order is the list's lowest row
        listing.add(f"p{i}", "success")
    return orders, listing


def test_a_pass_with_many_pending_walks_the_list_instead_of_asking_each(world: World) -> None:
    orders = pending(world, 60)
    listing = FakeList(world.ledger.now_ms())
    listing.arrive(10)  # payouts too young to be due, or not ours, at the top
    for i in reversed(range(60)):  # the oldest order is the list's lowest row
        listing.add(f"p{i}", "failed" if i % 4 == 0 else "success")
    reconciler, _ = walking(world, listing)
    report = next_pass(world, reconciler)
    # 70 rows: 3 pages, then every order was shown.
    assert listing.requests == [1, 2, 3]
    assert world.limiter.taken == 3  # a slot of the details rate limit each
    assert report.walk is not None and report.walk.finished
    assert sorted(report.walk.matched) == sorted(orders)
    assert world.fake_details.calls == [] and world.vexora.calls == []
    assert world.lookups_published.published() == []
    for i, trade_no in enumerate(orders):
        assert world.state(trade_no) is (State.FAILED if i % 4 == 0 else State.SUCCEEDED)
    assert world.redis.exists("t:reconcile:walk") == 0
    assert "list walk (finished" in str(report)


def test_below_the_threshold_a_pass_asks_about_each_order(world: World) -> None:
    orders = pending(world, 49)
    listing = FakeList(world.ledger.now_ms())
    reconciler, _ = walking(world, listing)
    report = next_pass(world, reconciler)
    assert report.walk is None and listing.requests == []
    assert sorted(world.lookups_published.published()) == sorted(orders)


def test_payouts_arriving_during_the_walk_shift_rows_down_and_none_is_missed(
    world: World,
) -> None:
    orders, listing = listed_pending(world, 100)
    listing.arrivals = 7  # before every page: each page shows 7 rows read already
    reconciler, _ = walking(world, listing)
    report = next_pass(world, reconciler)
    assert report.walk is not None and sorted(report.walk.matched) == sorted(orders)
    # 18 new rows a page: 100 orders in 6 pages (the first holds 7 arrivals too).
    assert listing.requests == [1, 2, 3, 4, 5, 6]
    assert all(world.state(t) is State.SUCCEEDED for t in orders)
    assert world.lookups_published.published() == []


def test_a_walk_cut_short_by_its_budget_resumes_at_the_same_page_next_pass(
    world: World,
) -> None:
    orders, listing = listed_pending(world, 100)
    reconciler, _ = walking(world, listing, FakeLimiter(slots=2))
    first = next_pass(world, reconciler)
    assert first.walk is not None and not first.walk.finished
    assert listing.requests == [1, 2] and len(first.walk.matched) == 50
    # The other 50 wait for the walk: no single lookup of them.
    assert world.lookups_published.published() == []
    listing.arrive(30)  # meanwhile, at the top
    reconciler, _ = walking(world, listing)
    second = next_pass(world, reconciler)
    assert second.walk is not None and second.walk.finished
    # Page 3 again: 30 rows further down now, it shows only rows the first pass read
    # (none is skipped); the rest follow on pages 4 to 6.
    assert listing.requests == [1, 2, 3, 4, 5, 6]
    assert sorted(first.walk.matched + second.walk.matched) == sorted(orders)
    assert world.lookups_published.published() == []


def test_the_walk_stops_past_the_first_claim_and_the_orders_not_shown_fall_back(
    world: World,
) -> None:
    orders = pending(world, 60)
    listing = FakeList(world.ledger.now_ms())
    for i in reversed(range(1, 60)):  # p0 is not on the list (yet)
        listing.add(f"p{i}", "success")
    for i in range(200):  # a long history below: rows from hours before
        listing.add(f"old{i}", "success", age_ms=HOUR_MS + i)
    no_id = order_in(world, State.UNKNOWN)  # nothing to match it by
    reconciler, _ = walking(world, listing)
    report = next_pass(world, reconciler)
    assert report.walk is not None and report.walk.finished
    # 59 ours, then page 3 starts with rows an hour old: older than any order's claim.
    assert listing.requests == [1, 2, 3]
    assert sorted(world.lookups_published.published()) == sorted([orders[0], no_id])
    assert world.state(orders[0]) is State.PROCESSING


def test_a_list_that_cannot_be_read_falls_back_and_malformed_rows_are_counted(
    world: World,
) -> None:
    orders, listing = listed_pending(world, 80)
    listing.malformed = {1: 2}
    listing.fail_at = 2
    reconciler, skipped = walking(world, listing)
    report = next_pass(world, reconciler)
    assert report.walk is not None and not report.walk.finished
    assert skipped.count == 2 and report.walk.skipped_rows == 2
    shown = report.walk.matched
    assert len(shown) == 23  # page 1 less its 2 malformed rows
    # Everything not shown is asked about one by one this pass.
    assert sorted(world.lookups_published.published()) == sorted(set(orders) - set(shown))
    assert world.redis.hget("t:reconcile:walk", "page") == b"2"  # the next pass retries it


def test_a_sparse_list_is_walked_no_further_than_single_lookups_would_cost(
    world: World,
) -> None:
    orders = pending(world, 50)
    listing = FakeList(world.ledger.now_ms())
    for i in reversed(range(50)):
        listing.add(f"p{i}", "success")
        for j in range(100):  # each order above 100 payouts of others
            listing.add(f"x{i}-{j}", "success")
    reconciler, _ = walking(world, listing)
    report = next_pass(world, reconciler)
    assert report.walk is not None and report.walk.finished
    assert len(listing.requests) == 50  # the cap: as many pages as orders
    shown = set(report.walk.matched)
    assert 0 < len(shown) < 50
    assert sorted(world.lookups_published.published()) == sorted(set(orders) - shown)


def test_a_walk_that_lost_the_pass_lock_stops_at_once(world: World) -> None:
    trade_nos = pending(world, 60)
    listing = FakeList(world.ledger.now_ms())
    reconciler, _ = walking(world, listing)
    walk = reconciler.walk
    assert walk is not None
    orders = [o for o in world.ledger.get_many(trade_nos) if o]
    report = walk.run(orders, keep_lock=lambda: False)
    assert listing.requests == [] and not report.finished and len(report.waiting) == 60
