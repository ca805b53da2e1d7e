"""The webhook's rules (worker.web.webhook) on the test ledger, without HTTP: a body in, a Reply
out."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import ledger_reads
from tests.unit.notifications import (
    SECRET,
    Publisher,
    new_order,
    notification,
    signed,
    state_of,
)
from worker.core.signing import sign
from worker.core.states import State
from worker.ledger import Ledger
from worker.web.webhook import Reply, Unavailable, WebhookHandler, signers


class Receiver:
    """A handler of one ledger, with a publisher that records the lookups requested."""

    def __init__(self, ledger: Ledger, *, allow_unsigned: bool = False) -> None:
        self.ledger = ledger
        self.publisher = Publisher()
        self.handler = WebhookHandler(
            self.ledger,
            secrets=dict.fromkeys(("ID", "AR", "JP", "KH"), SECRET),
            request_lookups=self.publisher,
            allow_unsigned=allow_unsigned,
        )

    def handle(self, body: dict[str, Any]) -> Reply:
        return self.handler.handle(body)


@pytest.fixture
def rx(ledger: Ledger) -> Receiver:
    return Receiver(ledger)


@pytest.fixture
def rx_unsigned(ledger: Ledger) -> Receiver:
    return Receiver(ledger, allow_unsigned=True)


def assert_ok(reply: Reply, outcome: str) -> None:
    assert (reply.status, reply.text, reply.outcome) == (200, "OK", outcome)


# --- verified notifications ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"), [("0000", State.SUCCEEDED), ("00029", State.FAILED)]
)
def test_signed_final_status_moves_the_order(rx: Receiver, status: str, expected: State) -> None:
    trade_no = new_order(rx.ledger)
    reply = rx.handle(signed(notification(trade_no, status, message="REJECTED_TRANSACTION")))
    assert_ok(reply, "accepted")
    assert reply.trade_no == trade_no
    assert [(line.level, line.message % line.args) for line in reply.logs] == [
        (logging.INFO, f"webhook: -> {expected}")
    ]
    order = rx.ledger.get(trade_no)
    assert order is not None
    assert order.state == expected
    assert order.platform_trade_no == "PT20241130000123"
    assert order.provider_status == status
    assert order.provider_message == "REJECTED_TRANSACTION"
    assert ledger_reads.history(rx.ledger, trade_no)[-1][1] == f"{expected} webhook"
    assert rx.publisher.calls == []


def test_processing_report_moves_an_unknown_order_to_processing(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger, State.UNKNOWN)
    assert_ok(rx.handle(signed(notification(trade_no, "0015"))), "accepted")
    assert state_of(rx.ledger, trade_no) == State.PROCESSING


def test_numbers_instead_of_strings_are_tolerated(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    body = signed(notification(trade_no, amount=100000, timestamp=1732985021335))
    assert_ok(rx.handle(body), "accepted")
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED


def test_remark_is_stored_when_there_is_no_message(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    body = notification(trade_no, "00029", remark="account closed")
    del body["message"]
    assert_ok(rx.handle(signed(body)), "accepted")
    order = rx.ledger.get(trade_no)
    assert order is not None and order.provider_message == "account closed"


def test_uppercase_sign_verifies(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    body = signed(notification(trade_no))
    body["sign"] = body["sign"].upper()
    assert_ok(rx.handle(body), "accepted")
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED


def test_replay_is_ok_and_changes_nothing(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    body = signed(notification(trade_no))
    assert_ok(rx.handle(body), "accepted")
    history = ledger_reads.history(rx.ledger, trade_no)
    for _ in range(3):
        assert_ok(rx.handle(body), "replayed")
    order = rx.ledger.get(trade_no)
    assert order is not None
    assert order.state == State.SUCCEEDED
    assert order.discrepancy is None
    assert ledger_reads.history(rx.ledger, trade_no) == history
    assert ledger_reads.discrepancies(rx.ledger) == []


def test_contradicting_a_final_state_records_a_discrepancy(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger, State.SUCCEEDED)
    reply = rx.handle(signed(notification(trade_no, "00029")))
    assert_ok(reply, "contradicts_final")
    assert [line.level for line in reply.logs] == [logging.ERROR]
    order = rx.ledger.get(trade_no)
    assert order is not None
    assert order.state == State.SUCCEEDED
    assert order.discrepancy == "FAILED webhook"
    assert ledger_reads.discrepancies(rx.ledger) == [trade_no]
    summary = rx.ledger.batch(order.batch_id)
    assert summary is not None and summary.discrepancies == 1


def test_late_processing_report_after_final_changes_nothing(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger, State.SUCCEEDED)
    reply = rx.handle(signed(notification(trade_no, "0015")))
    assert_ok(reply, "out_of_order")
    assert [line.level for line in reply.logs] == [logging.INFO]
    order = rx.ledger.get(trade_no)
    assert order is not None
    assert (order.state, order.discrepancy) == (State.SUCCEEDED, None)


def test_report_for_a_requeued_order_is_applied(rx: Receiver) -> None:
    """Back in QUEUED after a 'not found', but its earlier POST did arrive: the report wins."""
    trade_no = new_order(rx.ledger, State.QUEUED)
    assert_ok(rx.handle(signed(notification(trade_no, "0000"))), "accepted")
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED


def test_unknown_trade_no_is_answered_ok(rx: Receiver) -> None:
    missing = rx.handle(signed(notification("0" * 32)))
    assert_ok(missing, "unknown_order")
    assert missing.trade_no == "0" * 32
    not_ours = rx.handle(signed(notification("not a trade no!")))
    assert_ok(not_ours, "unknown_order")
    assert not_ours.trade_no is None
    assert rx.publisher.calls == []


def test_unknown_status_publishes_a_lookup_and_sets_nothing(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    assert_ok(rx.handle(signed(notification(trade_no, "0001"))), "unknown_status")
    assert state_of(rx.ledger, trade_no) == State.PROCESSING
    assert rx.publisher.calls == [[trade_no]]


def test_unknown_status_of_a_final_order_publishes_nothing(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger, State.SUCCEEDED)
    assert_ok(rx.handle(signed(notification(trade_no, "0001"))), "unknown_status")
    assert rx.publisher.calls == []


def test_signed_body_without_trade_no_or_status_is_400(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    for missing in ("tradeNo", "status"):
        body = notification(trade_no)
        del body[missing]
        reply = rx.handle(signed(body))
        assert (reply.status, reply.outcome) == (400, "malformed")
    assert state_of(rx.ledger, trade_no) == State.PROCESSING


@pytest.mark.parametrize("amount", ["100000.00", "999", "sNaN", "abc"])
def test_reported_amount_is_compared_but_the_state_still_applies(rx: Receiver, amount: str) -> None:
    trade_no = new_order(rx.ledger)
    reply = rx.handle(signed(notification(trade_no, amount=amount)))
    assert_ok(reply, "accepted")
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED
    mismatch = [line for line in reply.logs if "reports amount" in line.message]
    assert [line.level for line in mismatch] == ([] if amount == "100000.00" else [logging.ERROR])


# --- refused notifications -------------------------------------------------------------


def test_forged_sign_is_401_and_changes_nothing(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    reply = rx.handle(signed(notification(trade_no), secret="someone-elses-secret"))
    assert (reply.status, reply.outcome) == (401, "forged")
    assert reply.text != "OK"
    assert state_of(rx.ledger, trade_no) == State.PROCESSING


def test_a_refused_notification_logs_only_a_trade_no_that_is_ours(rx: Receiver) -> None:
    """The tradeNo of an unverified body goes into the log line only if it could be ours."""
    account = "5464438554636 7"
    forged = rx.handle(signed(notification(account), secret="x"))
    unsigned = rx.handle(notification(account))
    assert (forged.outcome, forged.trade_no) == ("forged", None)
    assert (unsigned.outcome, unsigned.trade_no) == ("unsigned", None)
    assert all(account not in str(line) for line in forged.logs + unsigned.logs)
    trade_no = new_order(rx.ledger)
    assert rx.handle(signed(notification(trade_no), secret="x")).trade_no == trade_no


def test_tampered_amount_is_401_and_changes_nothing(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    body = signed(notification(trade_no, "00029"))
    body["amount"] = "1"
    assert rx.handle(body).status == 401
    body = signed(notification(trade_no, "00029"))
    body["status"] = "0000"
    assert rx.handle(body).status == 401
    assert state_of(rx.ledger, trade_no) == State.PROCESSING


@pytest.mark.parametrize("sign_value", [None, "", 12345, ["x"]])
def test_unsigned_or_odd_sign_is_401_by_default(rx: Receiver, sign_value: Any) -> None:
    trade_no = new_order(rx.ledger)
    body = notification(trade_no)
    if sign_value is not None:
        body["sign"] = sign_value
    assert rx.handle(body).status == 401
    assert state_of(rx.ledger, trade_no) == State.PROCESSING
    assert rx.publisher.calls == []


def test_unsigned_when_allowed_only_publishes_a_lookup(rx_unsigned: Receiver) -> None:
    rx = rx_unsigned
    trade_no = new_order(rx.ledger)
    assert_ok(rx.handle(notification(trade_no, "0000")), "unsigned_lookup")
    assert state_of(rx.ledger, trade_no) == State.PROCESSING
    assert rx.publisher.calls == [[trade_no]]
    # A forged sign is still refused, even when unsigned ones are allowed.
    assert rx.handle(signed(notification(trade_no), secret="nope")).status == 401


def test_unsigned_when_allowed_for_unknown_or_final_orders_publishes_nothing(
    rx_unsigned: Receiver,
) -> None:
    rx = rx_unsigned
    done = new_order(rx.ledger, State.SUCCEEDED)
    assert_ok(rx.handle(notification(done, "00029")), "unsigned_lookup")
    assert_ok(rx.handle(notification("f" * 32)), "unknown_order")
    assert rx.publisher.calls == []
    assert state_of(rx.ledger, done) == State.SUCCEEDED
    reply = rx.handle({"status": "0000"})
    assert (reply.status, reply.outcome) == (400, "malformed")


def test_broker_down_on_a_lookup_is_unavailable(rx_unsigned: Receiver) -> None:
    rx = rx_unsigned
    trade_no = new_order(rx.ledger)
    rx.publisher.fail = True
    with pytest.raises(Unavailable):
        rx.handle(notification(trade_no))


# --- one provider account per market ----------------------------------------------------

ACCOUNTS = {"ID": SECRET, "JP": SECRET, "AR": "ar-secret"}  # KH: no account configured


@pytest.fixture
def accounts(ledger: Ledger) -> WebhookHandler:
    return WebhookHandler(ledger, secrets=ACCOUNTS, request_lookups=Publisher())


@pytest.mark.parametrize(
    ("secrets", "market", "expected"),
    [
        (ACCOUNTS, "ID", {"ID", "JP"}),
        (ACCOUNTS, "AR", {"AR"}),
        ({}, "ID", set()),
        ({"ID": "other"}, "ID", set()),
    ],
)
def test_signers_are_the_markets_whose_secret_makes_the_sign(
    secrets: dict[str, str], market: str, expected: set[str]
) -> None:
    body = signed(notification("a" * 32), ACCOUNTS[market])
    assert signers(body, secrets) == expected


def test_each_market_own_account_secret_verifies_its_orders(
    accounts: WebhookHandler, ledger: Ledger
) -> None:
    for market, secret in ACCOUNTS.items():
        trade_no = new_order(ledger, market=market)
        assert_ok(accounts.handle(signed(notification(trade_no), secret)), "accepted")
        assert state_of(ledger, trade_no) is State.SUCCEEDED


@pytest.mark.parametrize(("market", "secret"), [("ID", "ar-secret"), ("AR", SECRET)])
def test_another_account_secret_is_refused_and_changes_nothing(
    accounts: WebhookHandler, ledger: Ledger, market: str, secret: str
) -> None:
    """A secret of ours, but not the order's account's: it vouches for its own orders only."""
    trade_no = new_order(ledger, market=market)
    history = ledger_reads.history(ledger, trade_no)
    for status in ("0000", "00029", "0001"):
        reply = accounts.handle(signed(notification(trade_no, status), secret))
        assert (reply.status, reply.outcome, reply.trade_no) == (401, "wrong_account", trade_no)
        assert reply.text != "OK"
        assert [line.level for line in reply.logs] == [logging.ERROR]
        assert all(secret not in str(line) for line in reply.logs)
    assert state_of(ledger, trade_no) is State.PROCESSING
    assert ledger_reads.history(ledger, trade_no) == history


def test_an_order_of_a_market_without_an_account_is_never_applied(
    accounts: WebhookHandler, ledger: Ledger
) -> None:
    trade_no = new_order(ledger, market="KH")
    for secret in (SECRET, "ar-secret"):
        reply = accounts.handle(signed(notification(trade_no), secret))
        assert (reply.status, reply.outcome) == (401, "no_account")
    assert accounts.handle(signed(notification(trade_no), "kh-guess")).outcome == "forged"
    assert state_of(ledger, trade_no) is State.PROCESSING


def test_a_verified_unknown_trade_no_is_ok_and_applies_nothing(
    accounts: WebhookHandler, ledger: Ledger
) -> None:
    known = new_order(ledger, market="AR")
    for secret in set(ACCOUNTS.values()):
        assert_ok(accounts.handle(signed(notification("b" * 32), secret)), "unknown_order")
    assert ledger.get("b" * 32) is None
    assert state_of(ledger, known) is State.PROCESSING


def test_the_handler_does_not_show_its_secrets(rx: Receiver) -> None:
    assert SECRET not in repr(rx.handler)


# --- fuzz ------------------------------------------------------------------------------

FIELD_NAMES = st.sampled_from(
    ["platFormTradeNo", "tradeNo", "amount", "status", "message", "remark", "timestamp", "sign"]
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0000", "0015", "00029", "", "0001"]),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


class Fuzz:
    """One ledger with a few orders in every interesting state, shared by the examples."""

    def __init__(self, ledger: Ledger) -> None:
        self.strict = Receiver(ledger)
        self.lenient = Receiver(ledger, allow_unsigned=True)
        self.trade_nos = [
            new_order(self.strict.ledger, state)
            for state in (State.QUEUED, State.PROCESSING, State.UNKNOWN, State.SUCCEEDED)
        ]
        self.states = self.snapshot()

    def snapshot(self) -> list[State]:
        return [state_of(self.strict.ledger, t) for t in self.trade_nos]


@pytest.fixture
def fuzz(ledger: Ledger) -> Fuzz:
    """Once per test: shared by its examples (the health check on that is suppressed)."""
    return Fuzz(ledger)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.data(),
    body=st.dictionaries(st.one_of(FIELD_NAMES, st.text(max_size=10)), VALUES, max_size=8),
)
def test_fuzz_random_objects_never_500_and_never_change_state(
    fuzz: Fuzz, data: st.DataObject, body: dict[str, Any]
) -> None:
    if data.draw(st.booleans(), label="use a real tradeNo"):
        body["tradeNo"] = data.draw(st.sampled_from(fuzz.trade_nos), label="tradeNo")
    if "sign" in body and data.draw(st.booleans(), label="sign with a wrong secret"):
        body["sign"] = sign(body, "wrong-secret")
    for rx in (fuzz.strict, fuzz.lenient):
        assert rx.handle(body).status < 500
        assert fuzz.snapshot() == fuzz.states
