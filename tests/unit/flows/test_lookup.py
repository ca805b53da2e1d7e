"""Lookups (worker.flows.lookup) on the test ledger and fakeredis, with fake provider clients and
fake publishers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import redis
from werkzeug.wrappers import Response

from schemas import Payout
from tests import ledger_reads
from tests.unit.fake_provider import (
    ACCOUNT,
    API_KEY,
    CLIENT_ID,
    CLIENT_SECRET,
    FakeProvider,
    Seen,
    error,
    json_response,
    serving,
)
from tests.unit.pending_orders import (
    DAY,
    FakeLimiter,
    FakeVexora,
    World,
    in_flight,
    make_world,
    order_in,
)
from worker.core.defaults import MAX_NO_RECORD_RESUBMITS, NO_RECORD_GRACE
from worker.core.exceptions import MarketUnavailable, NotFound, OutcomeUnknown, RateLimited
from worker.core.settings import Settings
from worker.core.states import State
from worker.ledger import Ledger
from worker.provider.details import DetailsClient
from worker.provider.disbursements import Disbursement, parse_disbursement
from worker.provider.no_details import NoDetailsApi
from worker.provider.token import TokenCache, TokenFetcher

MakeWorld = Callable[..., World]


@pytest.fixture
def make(fake_redis: redis.Redis, ledger: Ledger) -> MakeWorld:
    return lambda **overrides: make_world(fake_redis, ledger, **overrides)


@pytest.fixture
def world(make: MakeWorld) -> World:
    return make()


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with serving() as fake:
        yield fake


def details_client(
    provider: FakeProvider, client: redis.Redis, *, failure_backoff: float
) -> DetailsClient:
    """The production details client and token cache, against a fake details API."""
    fetch = TokenFetcher(
        provider.url,
        api_key=API_KEY,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        timeouts=(1.0, 2.0),
    )
    tokens = TokenCache(client, fetch, failure_backoff=failure_backoff)
    return DetailsClient(
        provider.url,
        api_key=API_KEY,
        account_id=ACCOUNT,
        tokens=tokens,
        timeouts=(1.0, 2.0),
        details_path=Settings().details_path,
        list_path=Settings().details_list_path,
    )


def requested(provider: FakeProvider) -> list[str]:
    """The last path segment of every request the fake details API received."""
    return [seen.path.rsplit("/", 1)[-1] for seen in provider.seen]


# --- each answer, each path ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [("success", State.SUCCEEDED), ("failed", State.FAILED), ("pending", State.PROCESSING)],
)
def test_details_answer_by_platform_id(world: World, status: str, expected: State) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-1")
    world.fake_details.status("p-1", status)
    report = world.lookups.run([trade_no], budget=5)
    assert world.fake_details.calls == ["p-1"]
    assert world.vexora.calls == []  # the details API answered: no query by tradeNo
    assert world.state(trade_no) is expected
    order = world.ledger.get(trade_no)
    assert order is not None and order.provider_status == status
    assert report.errors == 0 and report.requeued == []
    if expected is not State.PROCESSING:
        assert report.moved == {f"PROCESSING->{expected}": 1}
        assert [h.split(" ")[0] for _, h in ledger_reads.history(world.ledger, trade_no)][
            -1
        ] == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [("0000", State.SUCCEEDED), ("00029", State.FAILED), ("0015", State.PROCESSING)],
)
def test_query_answer_by_trade_no_when_there_is_no_platform_id(
    world: World, status: str, expected: State
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.status(trade_no, status, platform_trade_no="p-77")
    report = world.lookups.run([trade_no], budget=5)
    assert world.fake_details.calls == []
    assert world.vexora.calls == [trade_no]
    assert world.state(trade_no) is expected
    order = world.ledger.get(trade_no)
    assert order is not None
    assert (order.platform_trade_no, order.provider_status) == ("p-77", status)
    assert report.moved == {f"UNKNOWN->{expected}": 1}


def test_details_not_found_asks_by_trade_no_with_its_own_slot(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-lag")
    world.vexora.status(trade_no, "0000", platform_trade_no="p-lag")
    world.lookups.run([trade_no], budget=5)
    assert world.fake_details.calls == ["p-lag"] and world.vexora.calls == [trade_no]
    assert world.limiter.taken == 2  # every provider call is under the shared limit
    assert world.state(trade_no) is State.SUCCEEDED


def test_unrecognised_details_status_is_confirmed_by_query(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-odd")
    world.fake_details.status("p-odd", "on_hold")
    world.vexora.status(trade_no, "00029", platform_trade_no="p-odd")
    world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.FAILED


def test_query_by_trade_no_uses_the_account_of_the_order_market(world: World) -> None:
    fields = {"amount": "100", "accountNo": "880123456789012345", "firstname": "A"}
    ((trade_no, _),) = world.ledger.create_orders(
        [Payout("AR", "ARS", Decimal(100), None, fields)], batch_id="b-ar", market="AR"
    )
    assert world.ledger.claim(trade_no)[0].moved
    assert world.ledger.transition(trade_no, State.UNKNOWN, source="submit").moved
    world.vexora.status(trade_no, "0000")
    world.lookups.run([trade_no], budget=5)
    assert world.vexora.markets == ["AR"]
    assert world.state(trade_no) is State.SUCCEEDED


# --- not found: a grace period, resubmission rounds, then REVIEW -----------------------


def resubmitted(world: World, trade_no: str, error: str = "OutcomeUnknown") -> None:
    """The resubmission is claimed and its POST's outcome is unknown again."""
    assert world.ledger.claim(trade_no)[0].moved
    assert world.ledger.transition(trade_no, State.UNKNOWN, source="submit", note=error).moved


def test_one_no_record_answer_is_not_believed(world: World) -> None:
    # The POST may still be on its way at the provider: a plain not-found only starts
    # the grace period.
    trade_no = order_in(world, State.UNKNOWN)
    report = world.look(trade_no, 0)
    assert world.state(trade_no) is State.UNKNOWN
    assert report.requeued == [] and world.submissions.calls == []
    assert report.moved == {"not found, UNKNOWN asked again later": 1}
    order = world.ledger.get(trade_no)
    assert order is not None and order.unseen_ms is not None and order.resubmits == 0


def test_no_record_twice_within_the_grace_period_still_waits(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.look(trade_no, 0)
    first = world.ledger.get(trade_no)
    world.look(trade_no, 29)
    assert world.state(trade_no) is State.UNKNOWN and world.submissions.calls == []
    assert world.ledger.get(trade_no) == first  # the first miss still counts from its time


def test_no_record_twice_30s_apart_resubmits_the_same_trade_no(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.look(trade_no, 0)
    report = world.look(trade_no, 30)
    assert world.state(trade_no) is State.QUEUED
    assert report.requeued == [trade_no]
    assert world.submissions.published() == [trade_no]
    assert (
        ledger_reads.history(world.ledger, trade_no)[-1][1]
        == "QUEUED lookup provider has no record"
    )
    order = world.ledger.get(trade_no)
    assert order is not None and order.resubmits == 1


@pytest.mark.parametrize(
    "undocumented",
    [NotFound("query: the provider shows no such order (code 9001: unknown order)", code="9001")],
)
def test_an_undocumented_refusal_counts_like_not_found(
    world: World, undocumented: NotFound
) -> None:
    # What the client makes of any refusal of the query (test_vexora): no record shown.
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.answers[trade_no] = undocumented
    world.look(trade_no, 0)
    world.look(trade_no, 31)
    assert world.state(trade_no) is State.QUEUED


@pytest.mark.parametrize(
    "failure",
    [
        OutcomeUnknown("query: outcome unknown (HTTP 502)", status_code=502),
        OutcomeUnknown("query: connection reset"),
        RateLimited(retry_after=1.0),
    ],
)
def test_a_failed_lookup_is_no_answer_and_does_not_count(world: World, failure: Exception) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.answers[trade_no] = failure
    world.look(trade_no, 0)
    del world.vexora.answers[trade_no]  # the provider answers not-found from now on
    world.look(trade_no, 40)  # the first real answer: the grace starts
    assert world.state(trade_no) is State.UNKNOWN
    world.vexora.answers[trade_no] = failure
    world.look(trade_no, 80)  # fails again: neither counts nor resets
    del world.vexora.answers[trade_no]
    world.look(trade_no, 81)
    assert world.state(trade_no) is State.QUEUED


def test_a_lookup_that_shows_the_payout_takes_its_state(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.look(trade_no, 0)
    world.vexora.status(trade_no, "0000", platform_trade_no="p-late")
    world.look(trade_no, 45)
    assert world.state(trade_no) is State.SUCCEEDED and world.submissions.calls == []


def test_each_resubmission_gets_its_own_grace_period(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.look(trade_no, 0)
    world.look(trade_no, 30)
    resubmitted(world, trade_no)
    # The miss noted for the first POST says nothing about the second.
    world.look(trade_no, 120)
    assert world.state(trade_no) is State.UNKNOWN
    world.look(trade_no, 150)
    assert world.state(trade_no) is State.QUEUED
    order = world.ledger.get(trade_no)
    assert order is not None and order.resubmits == 2


def test_no_record_after_the_last_round_goes_to_review_with_the_reason(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    at = 0.0
    for _ in range(MAX_NO_RECORD_RESUBMITS):
        world.look(trade_no, at)
        world.look(trade_no, at + NO_RECORD_GRACE)
        assert world.state(trade_no) is State.QUEUED
        resubmitted(world, trade_no)
        at += 100
    world.look(trade_no, at)
    report = world.look(trade_no, at + NO_RECORD_GRACE)
    assert report.review == [trade_no]
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.REVIEW
    assert order.reason == "provider has no record after 3 resubmissions"
    assert len(world.submissions.published()) == MAX_NO_RECORD_RESUBMITS


def test_an_abandoned_claim_the_provider_has_no_record_of_is_resubmitted_at_once(
    make: MakeWorld,
) -> None:
    world = make()
    ttl, grace = world.ledger.claim_ttl, world.settings.abandoned_claim_grace
    # Its lease ran out longer than the grace ago: a POST of it would show by now.
    abandoned = order_in(world, State.SUBMITTING, age=ttl + grace + 1)
    live = order_in(world, State.SUBMITTING, age=ttl - 5)  # its worker renews it
    report = world.reconciler.run_pass()
    assert report.published == {State.SUBMITTING: 1}
    assert world.lookups_published.published() == [abandoned]
    report = world.lookups.run([abandoned, live], budget=5)
    # One "no record" is enough, where an UNKNOWN order waits NO_RECORD_GRACE for a second.
    assert world.state(abandoned) is State.QUEUED and report.requeued == [abandoned]
    assert world.submissions.published() == [abandoned]
    order = world.ledger.get(abandoned)
    assert order is not None and order.resubmits == 1
    # The live claim is not even asked about: its worker is sending it.
    assert world.state(live) is State.SUBMITTING and world.vexora.calls == [abandoned]
    assert report.moved["claim is live"] == 1


def test_a_claim_abandoned_moments_ago_is_resubmitted_only_once_the_grace_has_passed(
    world: World,
) -> None:
    ttl, grace = world.ledger.claim_ttl, world.settings.abandoned_claim_grace
    trade_no = order_in(world, State.SUBMITTING, age=ttl + 1)  # lease ended 1 s ago
    report = world.look(trade_no, 0)
    assert report.moved == {"not found, abandoned claim asked again later": 1}
    assert world.state(trade_no) is State.SUBMITTING and world.submissions.calls == []
    world.look(trade_no, grace)  # the next check's lookup, the grace passed
    assert world.state(trade_no) is State.QUEUED
    assert world.submissions.published() == [trade_no]


def test_a_claim_from_before_leases_is_abandoned_by_its_age(make: MakeWorld) -> None:
    world = make()
    lease = world.settings.claim_lease
    old, young = (order_in(world, State.SUBMITTING, age=a) for a in (lease + 20, lease - 20))
    with world.ledger.pool.connection() as conn:  # claimed by a worker without leases
        conn.execute("UPDATE orders SET claim_expires_at = NULL WHERE state = 'SUBMITTING'")
    assert world.reconciler.run_pass().published == {State.SUBMITTING: 1}
    world.lookups.run([old, young], budget=5)
    assert world.state(old) is State.QUEUED and world.state(young) is State.SUBMITTING


def test_a_claim_renewed_while_its_lookup_was_out_is_not_resubmitted(world: World) -> None:
    ttl, grace = world.ledger.claim_ttl, world.settings.abandoned_claim_grace
    trade_no = order_in(world, State.SUBMITTING, age=ttl + grace + 1)

    def renewed_meanwhile() -> NotFound:
        # Its worker was slow, not dead: its heartbeat renews the claim during the query.
        assert world.ledger.renew_claims([trade_no]) == 1
        return NotFound("query: order not found")

    world.vexora.answers[trade_no] = renewed_meanwhile
    report = world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.SUBMITTING and report.requeued == []
    assert world.submissions.calls == []


def test_claim_taken_again_since_the_pass_is_left_to_its_worker(world: World) -> None:
    trade_no = order_in(world, State.SUBMITTING, age=DAY)
    world.reconciler.run_pass()
    # Before the lookup runs, a duplicate delivery recovers it and a worker claims it anew.
    world.ledger.transition(trade_no, State.QUEUED, source="submit", expect=[State.SUBMITTING])
    assert world.ledger.claim(trade_no)[0].moved
    report = world.lookups.run([trade_no], budget=5)
    assert report.moved == {"claim is live": 1}
    assert world.vexora.calls == [] and world.limiter.taken == 0
    assert world.state(trade_no) is State.SUBMITTING and world.submissions.calls == []


def test_not_found_does_not_pull_back_an_order_claimed_again_meanwhile(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.look(trade_no, 0)
    world.look(trade_no, 10)  # the miss, 10 s later
    world.later(20)  # and 30 s after the first, this lookup's

    def requeued_and_claimed_elsewhere() -> NotFound:
        # Another lookup requeued it and a worker claimed it while this query was out.
        world.ledger.transition(trade_no, State.QUEUED, source="lookup", expect=[State.UNKNOWN])
        assert world.ledger.claim(trade_no)[0].moved
        return NotFound("query: order not found")

    world.vexora.answers[trade_no] = requeued_and_claimed_elsewhere
    report = world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.SUBMITTING
    assert report.requeued == [] and world.submissions.calls == []
    order = world.ledger.get(trade_no)
    assert order is not None and order.unseen_ms is None  # nothing noted on the new POST


def test_expired_claim_the_provider_knows_takes_the_provider_state(world: World) -> None:
    trade_no = order_in(world, State.SUBMITTING, age=DAY / 2)
    world.vexora.status(trade_no, "0015", platform_trade_no="p-9")
    world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.PROCESSING
    assert world.submissions.published() == []


def test_not_found_for_processing_changes_nothing(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-gone")
    report = world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.PROCESSING
    assert report.requeued == [] and world.submissions.published() == []
    assert report.moved == {"not found, PROCESSING unchanged": 1}


def test_not_found_for_unknown_with_a_platform_id_is_not_resubmitted(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN, ptn="p-seen")
    world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.UNKNOWN
    assert world.submissions.published() == []


def test_recovery_lookup_leaves_the_pass_marker_alone(world: World) -> None:
    trade_no = order_in(world, State.SUBMITTING, age=DAY)
    world.reconciler.run_pass()
    world.vexora.status(trade_no, "0015")
    world.lookups.recover(trade_no)  # a duplicate submit delivery found the stale claim
    assert world.state(trade_no) is State.PROCESSING
    assert in_flight(world, trade_no)  # the pass's own lookup message clears it


# --- contradictions and deadlines ------------------------------------------------------


def test_answer_contradicting_a_final_state_is_a_discrepancy(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-c")

    def webhook_first() -> Disbursement:
        # A webhook settles the order FAILED while the lookup is on its way...
        world.ledger.transition(trade_no, State.FAILED, source="webhook", report=True)
        # ...and the details API says it succeeded.
        return parse_disbursement({"transaction_id": "p-c", "status": "success"})

    world.fake_details.answers["p-c"] = webhook_first
    report = world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.FAILED
    assert report.discrepancies == 1
    assert ledger_reads.discrepancies(world.ledger) == [trade_no]
    order = world.ledger.get(trade_no)
    assert order is not None and order.discrepancy is not None
    summary = world.ledger.batch(order.batch_id)
    assert summary is not None and summary.discrepancies == 1
    assert order.discrepancy.startswith("SUCCEEDED")


def test_final_order_is_not_asked_about(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-f")
    world.ledger.transition(trade_no, State.SUCCEEDED, source="webhook")
    report = world.lookups.run([trade_no], budget=5)
    assert world.fake_details.calls == [] and world.limiter.taken == 0
    assert report.moved == {"already SUCCEEDED": 1}


def test_pending_past_the_deadline_goes_to_review_with_its_reason(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-slow")
    world.fake_details.status("p-slow", "pending")
    world.later(DAY + 60)
    report = world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.REVIEW
    assert report.review == [trade_no]
    order = world.ledger.get(trade_no)
    assert order is not None and order.reason is not None
    assert (
        order.reason.startswith("not final after 864") and "provider says pending" in order.reason
    )
    assert world.ledger.count(State.REVIEW) == 1  # listed for `disburse status`


def test_deadline_also_applies_when_lookups_keep_failing(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN, ptn="p-err")
    world.fake_details.answers["p-err"] = OutcomeUnknown("details: provider error (HTTP 500)")
    world.later(DAY + 60)
    report = world.lookups.run([trade_no], budget=5)
    assert report.errors == 1
    assert world.state(trade_no) is State.REVIEW
    order = world.ledger.get(trade_no)
    assert order is not None and order.reason is not None and "OutcomeUnknown" in order.reason


def test_final_answer_past_the_deadline_is_final_not_review(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-late")
    world.fake_details.status("p-late", "success")
    world.later(2 * DAY)
    world.lookups.run([trade_no], budget=5)
    assert world.state(trade_no) is State.SUCCEEDED


# --- failures during lookups -----------------------------------------------------------


def test_provider_error_is_counted_and_the_order_left_for_the_next_pass(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-e")
    world.fake_details.answers["p-e"] = OutcomeUnknown("details: provider error (HTTP 500)")
    world.reconciler.run_pass()
    report = world.lookups.run(world.lookups_published.published(), budget=5)
    assert report.errors == 1 and world.state(trade_no) is State.PROCESSING
    assert not in_flight(world, trade_no)
    assert world.next_pass().lookups == 1


def test_no_token_defers_details_lookups_until_the_token_back_off_ends(
    make: MakeWorld, provider: FakeProvider, fake_redis: redis.Redis
) -> None:
    def handler(seen: Seen) -> Response:
        if seen.path.endswith("/access-token/b2b"):
            return json_response(error(500, "token service down"), 500)
        tid = seen.path.rsplit("/", 1)[-1]
        status = {"p-t1": "failed", "p-t2": "success"}[tid]
        return json_response({"status": 200, "data": {"transaction_id": tid, "status": status}})

    provider.handler = handler
    details = details_client(provider, fake_redis, failure_backoff=60)
    world = make(details=details)
    first = order_in(world, State.PROCESSING, ptn="p-t1")
    second = order_in(world, State.PROCESSING, ptn="p-t2")
    no_platform_id = order_in(world, State.UNKNOWN)
    world.vexora.status(no_platform_id, "0000")
    world.reconciler.run_pass()
    report = world.lookups.run([first, second, no_platform_id], budget=5)
    assert report.errors == 0 and report.deferred == 2
    # One token request, not one per order: the rest fail at once in the token back-off,
    # without a request and without a slot.
    assert requested(provider) == ["b2b"]
    assert world.limiter.taken == 1
    assert world.state(first) is State.PROCESSING and world.state(second) is State.PROCESSING
    assert world.state(no_platform_id) is State.SUCCEEDED  # the query path needs no token
    assert not any(in_flight(world, t) for t in (first, second, no_platform_id))
    # The back-off over, a worker fetches a token: the details API is asked again.
    assert isinstance(details.tokens, TokenCache)
    fake_redis.set(details.tokens.key, "fresh-token")
    world.lookups.run([first, second], budget=5)
    assert world.state(first) is State.FAILED and world.state(second) is State.SUCCEEDED
    assert requested(provider) == ["b2b", "p-t1", "p-t2"]


def test_authentication_failure_also_defers_the_other_details_lookups(
    make: MakeWorld, provider: FakeProvider, fake_redis: redis.Redis
) -> None:
    def handler(seen: Seen) -> Response:
        if seen.path.endswith("/access-token/b2b"):
            return json_response({"data": {"access_token": "t", "expires_in": "3600"}})
        return json_response(error(401, "Unauthorized partner"), 401)

    provider.handler = handler
    world = make(details=details_client(provider, fake_redis, failure_backoff=60))
    a = order_in(world, State.PROCESSING, ptn="p-a1")
    b = order_in(world, State.PROCESSING, ptn="p-a2")
    report = world.lookups.run([a, b], budget=5)
    assert (report.errors, report.deferred) == (0, 2)
    # A fresh token refused too (AuthenticationFailed) backs the token cache off: the
    # second order's details are not even asked for.
    assert requested(provider) == ["b2b", "p-a1", "b2b", "p-a1"]
    assert world.state(a) is State.PROCESSING and world.state(b) is State.PROCESSING


def test_rate_limited_by_the_provider_slows_everyone(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.answers[trade_no] = RateLimited(retry_after=2.5)
    report = world.lookups.run([trade_no], budget=5)
    assert report.errors == 1 and world.limiter.penalties == [2.5]
    assert world.state(trade_no) is State.UNKNOWN


def test_rate_limit_budget_spent_hands_the_rest_on(make: MakeWorld) -> None:
    world = make(limiter=FakeLimiter(slots=2))
    orders = [order_in(world, State.PROCESSING, ptn=f"p-r{i}") for i in range(5)]
    for i in range(5):
        world.fake_details.status(f"p-r{i}", "success")
    world.reconciler.run_pass()
    report = world.lookups.run(orders, budget=5)
    assert report.leftover == orders[2:]
    assert [world.state(t) for t in orders[:2]] == [State.SUCCEEDED] * 2
    assert [in_flight(world, t) for t in orders] == [False, False, True, True, True]


# --- settings absent ---------------------------------------------------------------------


def test_without_the_details_api_a_lookup_asks_the_status_query(make: MakeWorld) -> None:
    world = make(details=NoDetailsApi())
    trade_no = order_in(world, State.PROCESSING, ptn="p-1")
    world.vexora.status(trade_no, "0000", platform_trade_no="p-1")
    report = world.lookups.run([trade_no], budget=5)
    assert world.vexora.calls == [trade_no]
    assert world.state(trade_no) is State.SUCCEEDED and report.errors == 0


def test_an_order_whose_market_lost_its_account_is_left_pending_not_crashed_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    trade_no = order_in(world, State.UNKNOWN)

    def removed(market: str) -> FakeVexora:
        raise MarketUnavailable(market, [f"VEXORA_{market}_APP_SECRET"], ["VEXORA_APP_SECRET"])

    world.lookups.vexora = removed
    report = world.lookups.run([trade_no], budget=5)
    assert report.errors == 1 and world.state(trade_no) is State.UNKNOWN
    assert "market ID is not configured: set VEXORA_ID_APP_SECRET" in caplog.text
