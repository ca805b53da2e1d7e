"""FAILED is confirmed with the provider before it is final or paid again (issue 21.3,
21.5, 21.6; worker.core.confirm): on the test ledger with fake details and payout clients
(tests.unit.pending_orders) and, for the query codes, the fake provider on a real port.

Every test here fails on the code before these changes: a FAILED report was final on one
word, a report's provider id overwrote the stored one, a retry and an operator's FAILED
trusted the ledger's FAILED, and any query code but 5000 read as "no record"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests import ledger_reads
from tests.unit.fake_provider import FakeProvider, serving
from tests.unit.ledger_sql import events
from tests.unit.pending_orders import World, make_world, new_orders
from worker.core.config import load_settings
from worker.core.exceptions import ConfigError, DecisionRefused, OutcomeUnknown
from worker.core.samples import sample_rows
from worker.core.states import Outcome, State
from worker.dev.credentials import sandbox_settings
from worker.flows.decisions import Decisions
from worker.flows.producer import Producer
from worker.flows.reads import LookupReport
from worker.flows.report import status_dict, status_text
from worker.ledger import Ledger
from worker.provider.report import ProviderReport
from worker.provider.vexora import VexoraClient

GRACE = 30.0


@pytest.fixture
def world(fake_redis: redis.Redis, ledger: Ledger) -> World:
    return make_world(fake_redis, ledger)


def failed(ptn: str | None = "p-1") -> ProviderReport:
    return ProviderReport(State.FAILED, ptn, "00029", "REJECTED_TRANSACTION")


def paid(ptn: str | None = "p-1") -> ProviderReport:
    return ProviderReport(State.SUCCEEDED, ptn, "0000", "")


def sent_twice(world: World, state: State = State.PROCESSING, ptn: str | None = "p-1") -> str:
    """An order POSTed twice (a resubmission after "no record"), now in ``state``."""
    (trade_no,) = new_orders(world)
    ledger = world.ledger
    assert ledger.claim(trade_no)[0].moved
    assert ledger.transition(trade_no, State.UNKNOWN, source="submit").moved
    assert ledger.transition(trade_no, State.QUEUED, source="lookup", resubmits=1).moved
    assert ledger.claim(trade_no)[0].moved
    if state is not State.SUBMITTING:
        assert ledger.transition(trade_no, state, source="submit", platform_trade_no=ptn).moved
    return trade_no


def look(world: World, trade_no: str) -> LookupReport:
    return world.lookups.run([trade_no], budget=5)


# --- 21.3: a FAILED report is final only when both APIs confirm it ---------------------


@pytest.mark.parametrize("source", ["webhook", "lookup", "submit"])
def test_a_failed_report_for_a_later_attempt_is_final_only_when_both_apis_confirm(
    world: World, source: str
) -> None:
    first = State.SUBMITTING if source == "submit" else State.PROCESSING
    trade_no = sent_twice(world, first)
    if source == "submit":  # the answer to the second POST, applied with the next claims
        world.ledger.claim_many([], answers=[(trade_no, failed())])
        assert world.state(trade_no) is State.UNKNOWN  # sent, outcome to be confirmed
    else:
        outcome = world.ledger.apply_report(trade_no, failed(), source=source)  # type: ignore[arg-type]
        assert outcome is Outcome.UNCONFIRMED and world.state(trade_no) is State.PROCESSING
    # Recorded in its history, never as its state.
    *_, after, facts = events(world.ledger, trade_no)[-1]
    assert facts["unconfirmed"] == "FAILED" and facts["reported_status"] == "00029"
    assert after == ("UNKNOWN" if source == "submit" else "PROCESSING")

    # One API says failed, the other has no record: not confirmed, asked again.
    world.fake_details.status("p-1", "failed")
    assert look(world, trade_no).moved == {"FAILED not confirmed": 1}
    assert world.state(trade_no) is State(after)
    # Both say failed: FAILED.
    world.vexora.status(trade_no, "00029", "p-1")
    look(world, trade_no)
    assert world.state(trade_no) is State.FAILED
    assert world.fake_details.calls.count("p-1") >= 2 and trade_no in world.vexora.calls


def test_a_failed_report_for_a_first_attempt_is_still_final_at_once(world: World) -> None:
    (trade_no,) = new_orders(world)
    assert world.ledger.claim(trade_no)[0].moved
    world.ledger.claim_many([], answers=[(trade_no, failed())])
    assert world.state(trade_no) is State.FAILED


def test_the_apis_disagreeing_about_a_failure_send_the_order_to_review(world: World) -> None:
    trade_no = sent_twice(world)
    world.fake_details.status("p-1", "failed")
    world.vexora.status(trade_no, "0000", "p-1")
    report = look(world, trade_no)
    assert report.review == [trade_no] and world.state(trade_no) is State.REVIEW
    order = world.ledger.get(trade_no)
    assert order is not None and order.reason is not None
    assert order.reason.startswith("the provider's APIs disagree: details API: FAILED")


def test_the_list_walk_leaves_a_failure_to_confirm_to_a_lookup(world: World) -> None:
    trade_no = sent_twice(world)
    order = world.ledger.get(trade_no)
    assert order is not None
    world.fake_details.status("p-1", "failed")
    report = LookupReport()
    world.lookups.apply_details(order, world.fake_details.answers["p-1"], report)
    assert report.moved == {"FAILED to be confirmed by a lookup": 1}
    assert world.state(trade_no) is State.PROCESSING
    assert world.lookups_published.published() == [trade_no]


# --- 21.3: a report naming another provider id -----------------------------------------


@pytest.mark.parametrize("report", [failed("p-2"), paid("p-2")])
def test_a_report_naming_another_provider_id_sends_the_order_to_review_with_both_ids(
    world: World, report: ProviderReport
) -> None:
    (trade_no,) = new_orders(world)
    assert world.ledger.claim(trade_no)[0].moved
    assert world.ledger.transition(
        trade_no, State.PROCESSING, source="submit", platform_trade_no="p-1"
    ).moved
    assert world.ledger.apply_report(trade_no, report, source="webhook") is Outcome.OTHER_ID
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.REVIEW
    assert order.platform_trade_no == "p-1"  # never overwritten
    assert order.reason == "the provider named another payout id: stored p-1, reported p-2"
    source, before, after, facts = events(world.ledger, trade_no)[-1]
    assert (source, before, after) == ("webhook", "PROCESSING", "REVIEW")
    assert facts["platform_trade_no"] == "p-1" and facts["reported_platform_trade_no"] == "p-2"


def test_another_provider_id_for_a_final_order_is_a_discrepancy_the_id_kept(
    world: World,
) -> None:
    (trade_no,) = new_orders(world)
    assert world.ledger.claim(trade_no)[0].moved
    world.ledger.claim_many([], answers=[(trade_no, paid("p-1"))])
    outcome = world.ledger.apply_report(trade_no, paid("p-2"), source="webhook")
    assert outcome is Outcome.DISCREPANCY
    order = world.ledger.get(trade_no)
    assert order is not None and (order.state, order.platform_trade_no) == (
        State.SUCCEEDED,
        "p-1",
    )
    assert order.discrepancy == "SUCCEEDED webhook naming platFormTradeNo p-2"


# --- 21.3: paid after all, with a retry ---------------------------------------------------


def producer(world: World) -> Producer:
    settings = sandbox_settings(env={"NOTIFY_URL": "https://merchant.example/notify"})
    return Producer(
        world.ledger,
        settings,
        publish=lambda trade_nos: None,
        sign=lambda market: VexoraClient.from_settings(settings, market).signed_body,
        ask=lambda order: world.lookups.ask_both(order, 5),
    )


def failed_batch(world: World, make: Producer, n: int = 1) -> tuple[str, list[str]]:
    """``n`` payouts FAILED on their first POST, which both APIs confirm."""
    result = make.enqueue_batch("ID", list(enumerate(sample_rows("ID", n), 1)))
    assert result.batch_id is not None
    for i, trade_no in enumerate(result.trade_nos):
        assert world.ledger.claim(trade_no)[0].moved
        world.ledger.claim_many([], answers=[(trade_no, failed(f"p-{i}"))])
        assert world.state(trade_no) is State.FAILED
        world.fake_details.status(f"p-{i}", "failed")
        world.vexora.status(trade_no, "00029", f"p-{i}")
    return result.batch_id, result.trade_nos


@pytest.mark.parametrize("sent", [False, True])
def test_a_failed_payout_reported_paid_stops_its_retry(world: World, sent: bool) -> None:
    make = producer(world)
    batch, (original,) = failed_batch(world, make)
    retry = make.retry(batch)
    assert retry.batch_id is not None
    (again,) = retry.trade_nos
    if sent:
        assert world.ledger.claim(again)[0].moved

    outcome = world.ledger.apply_report(original, paid("p-0"), source="webhook")

    assert outcome is Outcome.DISCREPANCY and world.state(original) is State.FAILED
    order = world.ledger.get(again)
    assert order is not None
    assert order.state is (State.REVIEW if sent else State.CANCELLED)
    assert order.reason is not None
    assert order.reason.startswith(f"the payout it retries was reported paid ({original})")
    summary = world.ledger.batch(retry.batch_id)
    assert summary is not None
    data = status_dict(world.ledger, summary, details=True)
    assert data["retries_stopped"] == {str(order.state): 1}
    assert f"RETRIES STOPPED 1 {order.state}" in status_text(data)


# --- 21.5: a retry and an operator's FAILED ask the provider first ----------------------


@pytest.mark.parametrize(
    ("details", "query", "said"),
    [
        ("success", "0000", "details API: SUCCEEDED"),
        ("pending", "0015", "still pending"),
        ("failed", "0015", "status query: PROCESSING"),
        ("failed", None, "status query: no record"),
    ],
)
def test_a_retry_the_provider_does_not_confirm_failed_is_refused_with_its_word(
    world: World, details: str, query: str | None, said: str
) -> None:
    make = producer(world)
    batch, (stale, confirmed) = failed_batch(world, make, 2)
    world.fake_details.status("p-0", details)
    if query is None:
        del world.vexora.answers[stale]
    else:
        world.vexora.status(stale, query, "p-0")

    result = make.retry(batch)

    assert list(result.retries) == [confirmed] and result.refused == [stale]
    assert result.not_retried[stale].startswith("the provider says details API")
    assert said in result.not_retried[stale]
    assert result.to_dict()["refused"] == [stale]
    assert ledger_reads.payload(world.ledger, stale)  # kept: not retried


def test_a_retry_of_a_payout_never_recorded_waits_for_the_grace(world: World) -> None:
    make = producer(world)
    result = make.enqueue_batch("ID", list(enumerate(sample_rows("ID", 1), 1)))
    assert result.batch_id is not None
    (trade_no,) = result.trade_nos
    assert world.ledger.claim(trade_no)[0].moved
    assert world.ledger.transition(trade_no, State.FAILED, source="submit").moved
    early = make.retry(result.batch_id)
    assert early.refused == [trade_no] and "after its last POST" in early.not_retried[trade_no]
    world.later(GRACE)
    assert list(make.retry(result.batch_id).retries) == [trade_no]


@pytest.mark.parametrize(("query", "said"), [("0000", "SUCCEEDED"), (None, "no record")])
def test_resolve_failed_is_refused_unless_both_apis_say_failed(
    world: World, query: str | None, said: str
) -> None:
    trade_no = sent_twice(world, State.UNKNOWN, ptn="p-7")
    reason = "pending past its deadline"
    assert world.ledger.transition(trade_no, State.REVIEW, source="lookup", reason=reason).moved
    decisions = Decisions(world.ledger, lambda order: world.lookups.ask_both(order, 5), GRACE)
    world.fake_details.status("p-7", "failed")  # the details API alone says failed
    if query is not None:
        world.vexora.status(trade_no, query, "p-7")  # the status query shows it paid
    with pytest.raises(DecisionRefused, match=f"status query: {said}"):
        decisions.resolve(trade_no, "failed", note="no record", operator="erin")
    assert world.state(trade_no) is State.REVIEW


# --- 21.6: only NOT_FOUND_CODES mean "no record" ----------------------------------------


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with serving() as fake:
        yield fake


def test_an_unknown_query_code_is_not_no_record(world: World, provider: FakeProvider) -> None:
    client = VexoraClient(provider.url, "M-1", "s", timeouts=(1.0, 2.0))
    world.lookups.vexora = lambda market: client
    (trade_no,) = new_orders(world)
    assert world.ledger.claim(trade_no)[0].moved
    assert world.ledger.transition(trade_no, State.UNKNOWN, source="submit").moved
    refused = {"code": "8000", "msg": "order does not exist", "success": False}
    for _ in range(2):  # two answers a grace apart: "no record" would resubmit it
        provider.reply(refused)
        report = look(world, trade_no)
        assert report.moved == {"code 8000 not known": 1} and report.requeued == []
        world.later(GRACE)
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.UNKNOWN and order.unseen_ms is None


def test_no_record_grace_is_a_setting_the_lookups_use(
    fake_redis: redis.Redis, ledger: Ledger
) -> None:
    assert load_settings({}).no_record_grace == 30.0
    assert load_settings({"NO_RECORD_GRACE": "2.5"}).no_record_grace == 2.5
    with pytest.raises(ConfigError, match="NO_RECORD_GRACE"):
        load_settings({"NO_RECORD_GRACE": "soon"})
    with pytest.raises(ConfigError, match="NOT_FOUND_CODES"):
        load_settings({"NOT_FOUND_CODES": "4004,0000"})
    world = make_world(fake_redis, ledger)
    world.lookups.no_record_grace = 2.0
    (trade_no,) = new_orders(world)
    assert world.ledger.claim(trade_no)[0].moved
    assert world.ledger.transition(trade_no, State.UNKNOWN, source="submit").moved
    look(world, trade_no)  # no record: noted
    world.later(2.0)
    assert look(world, trade_no).requeued == [trade_no]


def test_a_lookup_error_is_still_an_error(world: World) -> None:
    (trade_no,) = new_orders(world)
    assert world.ledger.claim(trade_no)[0].moved
    assert world.ledger.transition(trade_no, State.UNKNOWN, source="submit").moved
    world.vexora.answers[trade_no] = OutcomeUnknown("query: HTTP 502")
    assert look(world, trade_no).errors == 1 and world.state(trade_no) is State.UNKNOWN
