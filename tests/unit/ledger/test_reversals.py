"""Reversals and what payouts cost (issue 14 items 3 and 4) on the test ledger (PostgreSQL):
the ledger's rule (apply_report), the lookups and the reconcile pass that confirm a
reported failure through the details API alone, and the fees and totals debited that
every details answer records."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from tests import ledger_reads
from tests.unit.ledger_sql import events
from tests.unit.notifications import SECRET, Publisher, notification, signed
from tests.unit.pending_orders import World, make_world, new_orders, order_in
from worker import cli
from worker.celery import runtime
from worker.core.exceptions import OutcomeUnknown
from worker.core.states import Outcome, State
from worker.dev.redis_server import RedisServer
from worker.flows import report
from worker.ledger import Debit, Ledger
from worker.provider.disbursements import Disbursement, parse_disbursement
from worker.provider.no_details import NoDetailsApi
from worker.provider.report import ProviderReport
from worker.web.webhook import WebhookHandler

MakeWorld = Callable[..., World]
FAILED = ProviderReport(State.FAILED, "p-1", "failed", "")
IDR_COST = Debit(Decimal("2000.00"), "IDR", Decimal("102000.00"), "IDR")


@pytest.fixture
def world(fake_redis: redis.Redis, ledger: Ledger) -> World:
    return make_world(fake_redis, ledger)


def succeeded(world: World, ptn: str | None = "p-1") -> str:
    """An order paid (a webhook said so), with the provider id ``ptn``."""
    trade_no = order_in(world, State.PROCESSING, ptn=ptn)
    assert world.ledger.transition(trade_no, State.SUCCEEDED, source="webhook").moved
    return trade_no


def details(ptn: str, status: str, **extra: Any) -> Disbursement:
    row: dict[str, Any] = {
        "transaction_id": ptn,
        "status": status,
        "amount": {"value": "100000.00", "currency": "IDR"},
        "fees": [{"name": "transfer service fee", "value": "2000.00", "currency": "IDR"}],
        "total_amount": {"value": "102000.00", "currency": "IDR"},
    }
    return parse_disbursement({**row, **extra})


def webhook(world: World, trade_no: str, status: str) -> str:
    """A signed provider notification for ``trade_no``: the reply's outcome label."""
    handler = WebhookHandler(world.ledger, secrets={"ID": SECRET}, request_lookups=Publisher())
    reply = handler.handle(signed(notification(trade_no, status)))
    assert (reply.status, reply.text) == (200, "OK")
    return reply.outcome


# --- the ledger's rule -----------------------------------------------------------------


def test_the_details_api_saying_failed_reverses_a_succeeded_order(world: World) -> None:
    finals: list[tuple[State, int]] = []
    ledger = Ledger(world.ledger.pool, on_final=lambda state, n: finals.append((state, n)))
    trade_no = succeeded(world)
    outcome = ledger.apply_report(trade_no, FAILED, source="lookup", debit=IDR_COST)
    assert outcome is Outcome.MOVED
    order = ledger.get(trade_no)
    assert order is not None and order.state is State.REVERSED
    assert (order.discrepancy, order.recheck_ms) == (None, None)
    assert (order.fee, order.fee_currency) == (Decimal("2000.00"), "IDR")
    assert (order.total_debited, order.total_debited_currency) == (Decimal("102000.00"), "IDR")
    # A normal event row, from the lookup: what the outbox sends as payout.reversed.
    source, before, after, facts = events(world.ledger, trade_no)[-1]
    assert (source, before, after) == ("lookup", "SUCCEEDED", "REVERSED")
    assert facts["provider_status"] == "failed" and "discrepancy" not in facts
    assert finals == [(State.REVERSED, 1)]  # counted as a final state
    # A replay changes nothing more.
    assert ledger.apply_report(trade_no, FAILED, source="lookup", debit=IDR_COST) is Outcome.SAME
    assert len(events(world.ledger, trade_no)) == 5 and finals == [(State.REVERSED, 1)]


@pytest.mark.parametrize("source", ["webhook", "lookup", "submit"])
def test_a_failure_reported_by_anyone_else_is_a_discrepancy_marked_for_a_check(
    world: World, source: Any
) -> None:
    # A webhook, or a query or submit answer: no debit, so not the details API.
    trade_no = succeeded(world)
    assert world.ledger.rechecks() == []
    outcome = world.ledger.apply_report(trade_no, FAILED, source=source)
    assert outcome is Outcome.DISCREPANCY
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.SUCCEEDED
    assert order.discrepancy == f"FAILED {source}" and order.recheck_ms is not None
    assert world.ledger.rechecks() == [(trade_no, order.recheck_ms)]
    assert events(world.ledger, trade_no)[-1][2] == "SUCCEEDED"  # recorded, not applied


def test_the_details_api_saying_failed_for_a_pending_order_is_a_plain_failure(
    world: World,
) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-1")
    assert world.ledger.apply_report(trade_no, FAILED, source="lookup", debit=IDR_COST) is (
        Outcome.MOVED
    )
    assert world.state(trade_no) is State.FAILED
    assert world.ledger.apply_report(trade_no, FAILED, source="lookup", debit=IDR_COST) is (
        Outcome.SAME
    )


def test_a_success_reported_for_a_reversed_order_is_a_discrepancy(world: World) -> None:
    trade_no = succeeded(world)
    world.ledger.apply_report(trade_no, FAILED, source="lookup", debit=IDR_COST)
    late = ProviderReport(State.SUCCEEDED, "p-1", "0000", "")
    assert world.ledger.apply_report(trade_no, late, source="webhook") is Outcome.DISCREPANCY
    assert world.state(trade_no) is State.REVERSED and world.ledger.rechecks() == []


def test_a_failure_reported_for_a_failed_or_cancelled_order_is_not_checked(world: World) -> None:
    failed = order_in(world, State.PROCESSING, ptn="p-1")
    world.ledger.transition(failed, State.FAILED, source="webhook")
    cancelled = order_in(world, State.QUEUED)
    world.ledger.transition(cancelled, State.CANCELLED, source="operator")
    assert world.ledger.apply_report(failed, FAILED, source="webhook") is Outcome.SAME
    assert world.ledger.apply_report(cancelled, FAILED, source="webhook") is Outcome.DISCREPANCY
    assert world.ledger.rechecks() == []


def test_a_check_clears_only_the_marks_it_saw(world: World) -> None:
    trade_no = succeeded(world)
    world.ledger.apply_report(trade_no, FAILED, source="webhook")
    ((_, first),) = world.ledger.rechecks()
    world.ledger.recheck_done(trade_no, first - 1)  # asked before this mark was made
    assert world.ledger.rechecks() == [(trade_no, first)]
    world.ledger.recheck_done(trade_no, first)
    assert world.ledger.rechecks() == []


@pytest.mark.parametrize(
    ("debit", "recorded"),
    [
        (IDR_COST, (Decimal("2000.00"), "IDR", Decimal("102000.00"), "IDR")),
        # Codes are kept as the orders' own are; an amount without a currency is not kept.
        (Debit(Decimal("1.5"), " usd", Decimal("11.5"), None), (Decimal("1.5"), "USD", None, None)),
        (Debit(Decimal(1), "US dollars", None, "USD"), (None, None, None, None)),
        (Debit(), (None, None, None, None)),
    ],
)
def test_what_a_payout_cost_is_kept_with_its_currency(
    world: World, debit: Debit, recorded: tuple[Any, ...]
) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-1")
    pending = ProviderReport(State.PROCESSING, "p-1", "pending", "")
    world.ledger.apply_report(trade_no, pending, source="lookup", debit=debit)
    order = world.ledger.get(trade_no)
    assert order is not None
    assert (order.fee, order.fee_currency, order.total_debited, order.total_debited_currency) == (
        recorded
    )


def test_an_answer_without_costs_keeps_those_recorded(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-1")
    pending = ProviderReport(State.PROCESSING, "p-1", "pending", "")
    world.ledger.apply_report(trade_no, pending, source="lookup", debit=IDR_COST)
    world.ledger.apply_report(trade_no, pending, source="lookup", debit=Debit())
    order = world.ledger.get(trade_no)
    assert order is not None and (order.fee, order.total_debited) == (
        Decimal("2000.00"),
        Decimal("102000.00"),
    )


def test_batch_summary_sums_costs_per_state_and_currency(world: World) -> None:
    orders = new_orders(world, 4)
    for trade_no in orders:
        assert world.ledger.claim(trade_no)[0].moved
        world.ledger.transition(trade_no, State.PROCESSING, source="submit")
    paid = ProviderReport(State.SUCCEEDED, None, "success", "")
    failed = ProviderReport(State.FAILED, None, "failed", "")
    world.ledger.apply_report(orders[0], paid, source="lookup", debit=IDR_COST)
    world.ledger.apply_report(orders[1], paid, source="lookup", debit=IDR_COST)
    usd_fee = Debit(Decimal("0.50"), "USD", None, None)
    world.ledger.apply_report(orders[2], failed, source="lookup", debit=usd_fee)
    order = world.ledger.get(orders[0])
    assert order is not None
    summary = world.ledger.batch(order.batch_id)
    assert summary is not None
    assert summary.fees == {
        State.SUCCEEDED: {"IDR": Decimal("4000.00")},
        State.FAILED: {"USD": Decimal("0.50")},
    }
    assert summary.debited == {State.SUCCEEDED: {"IDR": Decimal("204000.00")}}
    data = summary.to_dict()
    assert data["fees"] == {"SUCCEEDED": {"IDR": "4000.00"}, "FAILED": {"USD": "0.50"}}
    assert data["debited"] == {"SUCCEEDED": {"IDR": "204000.00"}}
    assert data["amounts"] == {"SUCCEEDED": {"IDR": "200000"}, "FAILED": {"IDR": "100000"},
                               "PROCESSING": {"IDR": "100000"}}  # fmt: skip


# --- the lookups and the reconcile pass ------------------------------------------------


def check(world: World) -> Any:
    """The next reconcile pass, and the lookups it published."""
    passed = world.next_pass()
    published = world.lookups_published.published()
    world.lookups_published.calls.clear()
    return passed, world.lookups.run(published, budget=5), published


def test_a_webhook_reported_reversal_is_confirmed_by_the_details_api(world: World) -> None:
    trade_no = succeeded(world, ptn="p-rev")
    assert webhook(world, trade_no, "00029") == "contradicts_final"
    assert world.state(trade_no) is State.SUCCEEDED  # the webhook alone moves nothing
    world.fake_details.answers["p-rev"] = details("p-rev", "failed")
    passed, looked, published = check(world)
    assert passed.published == {State.SUCCEEDED: 1} and published == [trade_no]
    assert "1 SUCCEEDED reported failed" in str(passed)
    assert looked.moved == {"SUCCEEDED->REVERSED": 1}
    assert world.fake_details.calls == ["p-rev"] and world.vexora.calls == []
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.REVERSED and order.recheck_ms is None
    assert order.fee == Decimal("2000.00") and order.total_debited == Decimal("102000.00")
    assert events(world.ledger, trade_no)[-1][:3] == ("lookup", "SUCCEEDED", "REVERSED")
    assert check(world)[2] == []  # nothing left to check


def test_a_forged_failure_the_details_api_contradicts_changes_no_state(world: World) -> None:
    trade_no = succeeded(world, ptn="p-ok")
    webhook(world, trade_no, "00029")
    world.fake_details.answers["p-ok"] = details("p-ok", "success")
    _, looked, published = check(world)
    assert published == [trade_no]
    assert looked.moved == {"reported failed, not confirmed: details API says success": 1}
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.SUCCEEDED
    # The forged webhook names another provider id than the stored one: said too (21.3).
    assert order.discrepancy == "FAILED webhook naming platFormTradeNo PT20241130000123"
    assert (
        ledger_reads.discrepancies(world.ledger) == [trade_no] and order.platform_trade_no == "p-ok"
    )
    assert order.recheck_ms is None and order.fee == Decimal("2000.00")
    assert check(world)[2] == []  # asked once, not on every pass


def test_without_the_details_api_a_reported_failure_after_success_waits_for_it(
    fake_redis: redis.Redis, ledger: Ledger
) -> None:
    """Only the details API confirms a reversal: not configured, nothing is asked and
    nothing changes; the mark stays for when it is configured."""
    world = make_world(fake_redis, ledger, details=NoDetailsApi())
    trade_no = succeeded(world, ptn="p-rev")
    webhook(world, trade_no, "00029")
    _, looked, published = check(world)
    assert published == [trade_no] and looked.deferred == 1
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.SUCCEEDED and order.recheck_ms is not None
    assert world.vexora.calls == []


def test_a_check_the_details_api_cannot_answer_now_is_asked_again(world: World) -> None:
    trade_no = succeeded(world, ptn="p-err")
    webhook(world, trade_no, "00029")
    world.fake_details.answers["p-err"] = OutcomeUnknown("details: provider error (HTTP 500)")
    _, looked, _ = check(world)
    assert looked.errors == 1 and world.state(trade_no) is State.SUCCEEDED
    world.fake_details.answers["p-err"] = details("p-err", "failed")
    _, looked, published = check(world)
    assert published == [trade_no] and world.state(trade_no) is State.REVERSED


@pytest.mark.parametrize(("ptn", "answer"), [(None, None), ("p-gone", None), ("p-odd", "held")])
def test_a_failure_nobody_can_confirm_leaves_the_order_succeeded(
    world: World, ptn: str | None, answer: str | None
) -> None:
    trade_no = succeeded(world, ptn=ptn)
    world.ledger.apply_report(trade_no, FAILED, source="webhook")
    if ptn is not None and answer is not None:
        world.fake_details.status(ptn, answer)
    _, looked, _ = check(world)
    # Never the query: only the details API may confirm a reversal.
    assert world.vexora.calls == [] and world.state(trade_no) is State.SUCCEEDED
    (said,) = looked.moved
    assert said.startswith("reported failed, not confirmed")
    assert check(world)[2] == []


def test_a_failure_reported_again_during_a_check_is_checked_again(world: World) -> None:
    trade_no = succeeded(world, ptn="p-race")
    world.ledger.apply_report(trade_no, FAILED, source="webhook")

    def reversed_meanwhile() -> Disbursement:
        # The provider reverses it after this answer was made, and says so by webhook.
        world.later(1)
        world.ledger.apply_report(trade_no, FAILED, source="webhook")
        return details("p-race", "success")

    world.fake_details.answers["p-race"] = reversed_meanwhile
    check(world)
    assert world.state(trade_no) is State.SUCCEEDED
    world.fake_details.answers["p-race"] = details("p-race", "failed")
    assert check(world)[2] == [trade_no]
    assert world.state(trade_no) is State.REVERSED


def test_every_details_answer_records_what_the_payout_cost(world: World) -> None:
    by_details = order_in(world, State.PROCESSING, ptn="p-fee")
    world.fake_details.answers["p-fee"] = details(
        "p-fee", "pending", fees=[{"value": "1.25", "currency": "USD"}, {"value": "0.25"}]
    )
    by_query = order_in(world, State.UNKNOWN)
    world.vexora.status(by_query, "0000")
    world.lookups.run([by_details, by_query], budget=5)
    order = world.ledger.get(by_details)
    assert order is not None and order.state is State.PROCESSING
    # The fee without a currency is in the amount's; the fees are in two currencies here.
    assert (order.fee, order.fee_currency) == (None, None)
    assert (order.total_debited, order.total_debited_currency) == (Decimal("102000.00"), "IDR")
    world.fake_details.answers["p-fee"] = details("p-fee", "success")
    world.lookups.run([by_details], budget=5)
    order = world.ledger.get(by_details)
    assert order is not None and (order.state, order.fee, order.fee_currency) == (
        State.SUCCEEDED,
        Decimal("2000.00"),
        "IDR",
    )
    queried = world.ledger.get(by_query)
    assert queried is not None and (queried.fee, queried.total_debited) == (None, None)


# --- status and export -----------------------------------------------------------------


def costed_batch(world: World) -> tuple[str, list[str]]:
    """A batch of three: paid, paid then reversed, pending; the first two with costs."""
    paid, bounced, pending = new_orders(world, 3)
    for trade_no in (paid, bounced, pending):
        assert world.ledger.claim(trade_no)[0].moved
        world.ledger.transition(trade_no, State.PROCESSING, source="submit")
    success = ProviderReport(State.SUCCEEDED, "p-1", "success", "")
    for trade_no in (paid, bounced):
        world.ledger.apply_report(trade_no, success, source="lookup", debit=IDR_COST)
    world.ledger.apply_report(bounced, FAILED, source="lookup", debit=IDR_COST)
    order = world.ledger.get(paid)
    assert order is not None
    return order.batch_id, [paid, bounced, pending]


def test_status_and_export_show_reversals_and_what_payouts_cost(world: World) -> None:
    batch_id, (paid, bounced, pending) = costed_batch(world)
    summary = world.ledger.batch(batch_id)
    assert summary is not None

    data = report.status_dict(world.ledger, summary, details=True)
    assert data["counts"] == {"SUCCEEDED": 1, "REVERSED": 1, "PROCESSING": 1}
    assert data["fees"] == {"SUCCEEDED": {"IDR": "2000.00"}, "REVERSED": {"IDR": "2000.00"}}
    assert data["debited"]["REVERSED"] == {"IDR": "102000.00"}
    assert data["settled"] is False
    lines = report.status_text(data).splitlines()
    assert "  SUCCEEDED          1   100000 IDR   fees 2000.00 IDR   debited 102000.00 IDR" in lines
    assert "  REVERSED           1   100000 IDR   fees 2000.00 IDR   debited 102000.00 IDR" in lines
    assert "  PROCESSING         1   100000 IDR" in lines

    out = io.StringIO()
    assert report.export_csv(world.ledger, [batch_id], out) == 3
    rows = {r["tradeNo"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    costs = ("state", "amount", "fee", "feeCurrency", "totalDebited", "totalDebitedCurrency")
    assert [tuple(rows[t][c] for c in costs) for t in (paid, bounced, pending)] == [
        ("SUCCEEDED", "100000", "2000.00", "IDR", "102000.00", "IDR"),
        ("REVERSED", "100000", "2000.00", "IDR", "102000.00", "IDR"),
        ("PROCESSING", "100000", "", "", "", ""),
    ]
    assert rows[bounced]["reason"] == "the details API says it failed after success"
    assert rows[bounced]["platformTradeNo"] == "p-1"


def test_disburse_status_shows_costs_and_keeps_its_json_keys(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    real_redis: redis.Redis,
    redis_server: RedisServer,
) -> None:
    batch_id, _ = costed_batch(world)
    monkeypatch.setattr(runtime, "ledger", lambda: world.ledger)
    # Redis, for the pause switch the status shows: the session's own (emptied).
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    runtime.reset()
    result = CliRunner().invoke(cli.main, ["status", batch_id, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"batch_id", "total", "counts", "amounts", "discrepancies"} <= set(data)
    assert data["counts"]["REVERSED"] == 1 and data["total"] == 3
    assert data["fees"]["REVERSED"] == {"IDR": "2000.00"}
    assert data["debited"]["SUCCEEDED"] == {"IDR": "102000.00"}
    text = CliRunner().invoke(cli.main, ["status", batch_id])
    assert text.exit_code == 0, text.output
    assert "REVERSED           1   100000 IDR   fees 2000.00 IDR   debited 102000.00 IDR" in (
        text.output
    )
    monkeypatch.undo()
    runtime.reset()
