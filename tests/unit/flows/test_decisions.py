"""REVIEW has exits (worker.flows.decisions): the list of what waits for a person, and a person's
decision, checked with the provider through both of its APIs (Lookups.ask_both with
fake details and payout clients) on the test ledger."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
import redis

from tests.unit.ledger_sql import events
from tests.unit.pending_orders import World, make_world, order_in
from worker.core.config import load_settings
from worker.core.exceptions import (
    BatchNotFound,
    DecisionRefused,
    InputError,
    NotInReview,
    OrderNotFound,
    OutcomeUnknown,
)
from worker.core.states import State
from worker.flows.decisions import Decisions
from worker.ledger import Ledger
from worker.provider.disbursements import parse_disbursement

STUCK = "pending past its deadline"
GRACE = 30.0


@pytest.fixture
def world(fake_redis: redis.Redis, ledger: Ledger) -> World:
    return make_world(fake_redis, ledger)


@pytest.fixture
def review(world: World) -> Decisions:
    return Decisions(world.ledger, lambda order: world.lookups.ask_both(order, 5), GRACE)


def in_review(world: World, *, ptn: str | None = "p-1") -> str:
    """An order sent to REVIEW by the deadline, the provider's last word on it."""
    trade_no = order_in(world, State.PROCESSING if ptn else State.UNKNOWN, ptn=ptn)
    moved = world.ledger.transition(
        trade_no, State.REVIEW, source="lookup", reason=STUCK, provider_status="0015"
    )
    assert moved.moved
    return trade_no


# --- the list ---------------------------------------------------------------------------


def test_pending_lists_review_orders_with_reason_and_the_providers_last_word(
    world: World, review: Decisions
) -> None:
    first, second = in_review(world), in_review(world)
    order_in(world, State.PROCESSING, ptn="p-busy")  # not waiting for a person
    listed = review.pending()
    assert [o.trade_no for o in listed] == [first, second]
    assert all((o.reason, o.provider_status) == (STUCK, "0015") for o in listed)
    assert [o.trade_no for o in review.pending(listed[1].batch_id)] == [second]
    with pytest.raises(BatchNotFound):
        review.pending("bnope")


# --- decisions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "decision"),
    [("success", State.SUCCEEDED), ("failed", State.FAILED)],
)
def test_a_decision_the_provider_confirms_moves_the_order_and_names_the_operator(
    world: World, review: Decisions, status: str, decision: State
) -> None:
    trade_no = in_review(world)
    if decision is State.FAILED:  # FAILED needs the status query's word too
        world.vexora.status(trade_no, "00029", "p-1")
    world.fake_details.answers["p-1"] = parse_disbursement(
        {
            "transaction_id": "p-1",
            "status": status,
            "fees": [{"value": "2500", "currency": "IDR"}],
            "total_amount": {"value": "102500", "currency": "IDR"},
        }
    )
    order = review.resolve(
        trade_no, decision.lower(), note="checked account 5464438554636", operator="alice"
    )
    assert order.state is decision and order.provider_status == status
    # What the payout cost is recorded, as with every details answer.
    assert (order.fee, order.total_debited) == (Decimal(2500), Decimal(102500))
    assert world.fake_details.calls == ["p-1"]  # asked the provider first
    source, before, after, facts = events(world.ledger, trade_no)[-1]
    assert (source, before, after) == ("operator", "REVIEW", decision)
    # The note is masked as any text we write: it is in the order's history.
    assert facts["operator"] == "alice" and facts["note"] == "checked account *********4636"
    assert facts["provider_status"] == status
    assert order.reason == STUCK  # why it waited stays
    # The decision is in the audit trail too, its note masked the same way.
    (audited,) = [e for e in world.ledger.audit_events() if e.trade_no == trade_no]
    assert (audited.who, audited.action, audited.note) == (
        "alice",
        "resolve",
        "checked account *********4636",
    )
    assert audited.facts == {"decision": str(decision)}


@pytest.mark.parametrize(
    ("status", "decision", "said"),
    [
        ("success", State.FAILED, "SUCCEEDED, status success"),
        ("failed", State.SUCCEEDED, "FAILED, status failed"),
        ("pending", State.FAILED, "PROCESSING (still pending: it may yet be paid)"),
        ("pending", State.SUCCEEDED, "PROCESSING (still pending"),
    ],
)
def test_a_decision_the_provider_contradicts_is_refused_saying_what_it_said(
    world: World, review: Decisions, status: str, decision: State, said: str
) -> None:
    trade_no = in_review(world)
    world.fake_details.status("p-1", status)
    with pytest.raises(DecisionRefused) as refused:
        review.resolve(trade_no, decision, note="looked", operator="alice")
    assert said in refused.value.provider_said
    # Both APIs' words (the status query has no record here).
    assert f"not marked {decision}: the provider says details API: {said}" in str(refused.value)
    assert "status query: no record" in str(refused.value)
    assert world.state(trade_no) is State.REVIEW
    assert events(world.ledger, trade_no)[-1][0] == "lookup"  # no event written


def test_no_record_at_the_provider_allows_failed_only_for_a_payout_it_never_accepted(
    world: World, review: Decisions
) -> None:
    never = in_review(world, ptn=None)  # the query by tradeNo finds nothing
    with pytest.raises(DecisionRefused, match="has no record of the payout"):
        review.resolve(never, "succeeded", note="bank says paid", operator="bob")
    # No record so soon after its last POST may be a request still on its way.
    with pytest.raises(DecisionRefused, match="after its last POST: ask again once NO_RECORD"):
        review.resolve(never, "failed", note="never arrived", operator="bob")
    world.later(GRACE)
    assert review.resolve(never, "failed", note="never arrived", operator="bob").state is (
        State.FAILED
    )
    assert world.vexora.calls == [never, never, never]

    accepted = in_review(world, ptn="p-gone")  # details and query both know nothing
    with pytest.raises(DecisionRefused, match="though it accepted it as p-gone: ask"):
        review.resolve(accepted, "failed", note="gone", operator="bob")
    assert world.state(accepted) is State.REVIEW


def test_a_provider_that_cannot_be_asked_changes_nothing(world: World, review: Decisions) -> None:
    trade_no = in_review(world, ptn=None)
    world.vexora.answers[trade_no] = OutcomeUnknown("query: HTTP 502")
    with pytest.raises(OutcomeUnknown):
        review.resolve(trade_no, "failed", note="x", operator="bob")
    assert world.state(trade_no) is State.REVIEW


BadCall = Callable[[Decisions, str], object]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r, t: r.resolve(t, "cancelled", note="n", operator="o"), InputError, "SUCCEEDED"),
        (lambda r, t: r.resolve(t, "failed", note="  ", operator="o"), InputError, "note"),
        (lambda r, t: r.resolve(t, "failed", note="n", operator=" "), InputError, "operator"),
        (lambda r, t: r.resolve("nope", "failed", note="n", operator="o"), OrderNotFound, "nope"),
    ],
)
def test_bad_decisions_are_refused_before_the_provider_is_asked(
    world: World, review: Decisions, call: BadCall, error: type[Exception], message: str
) -> None:
    trade_no = in_review(world)
    with pytest.raises(error, match=message):
        call(review, trade_no)
    assert world.fake_details.calls == [] and world.state(trade_no) is State.REVIEW


def test_only_an_order_in_review_is_decided(world: World, review: Decisions) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-1")
    world.fake_details.status("p-1", "success")
    with pytest.raises(NotInReview, match="is PROCESSING, not REVIEW"):
        review.resolve(trade_no, "succeeded", note="n", operator="o")
    assert world.fake_details.calls == []


def test_a_report_that_moved_the_order_meanwhile_wins(world: World, review: Decisions) -> None:
    trade_no = in_review(world)

    def answer_then_webhook(order: object) -> object:
        found = world.lookups.ask_both(order, 5)  # type: ignore[arg-type]
        world.ledger.transition(trade_no, State.SUCCEEDED, source="webhook", report=True)
        return found

    world.fake_details.status("p-1", "success")
    racing = Decisions(world.ledger, answer_then_webhook)  # type: ignore[arg-type]
    with pytest.raises(NotInReview, match="is SUCCEEDED"):
        racing.resolve(trade_no, "succeeded", note="n", operator="o")
    assert events(world.ledger, trade_no)[-1][0] == "webhook"


def test_the_operator_is_disburse_operator_else_the_login_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOGNAME", "carol")  # getpass reads it first
    assert load_settings({"DISBURSE_OPERATOR": "ops-dave"}).operator == "ops-dave"
    assert load_settings({}).operator == "carol"
