"""A batch's terms in the ledger (worker.ledger.approvals): approvals by different people,
never the creator; releases under the daily limit; the beneficiary daily limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas import Payout
from worker.core.policy import MarketPolicy
from worker.core.states import State
from worker.ledger import Ledger
from worker.ledger.approvals import BatchTerms, OverBeneficiaryLimit

POLICY = MarketPolicy("ID", "IDR", daily_limit=Decimal(1000), beneficiary_daily_limit=Decimal(600))
DAY = datetime.now(UTC) - timedelta(hours=1)  # "today" began an hour ago


def payout(amount: int, account: str = "1234567890") -> Payout:
    fields = {"bankCode": "0002", "bankAccountNo": account, "customerName": "Budi"}
    return Payout("ID", "IDR", Decimal(amount), None, fields)


def store(ledger: Ledger, batch_id: str, *amounts: int, terms: BatchTerms) -> None:
    """A batch of one payout to another beneficiary for each amount."""
    payouts = [payout(a, f"{batch_id}{i:08d}".replace("b", "1")) for i, a in enumerate(amounts)]
    ledger.create_orders(payouts, batch_id=batch_id, market="ID", terms=terms)


def test_approvals_are_by_different_people_and_never_the_creator(ledger: Ledger) -> None:
    store(ledger, "b1", 100, terms=BatchTerms(created_by="carol", approvals_needed=2, held="x"))
    assert not ledger.add_approval("b1", "carol")
    assert ledger.add_approval("b1", "alice")
    assert not ledger.add_approval("b1", "alice")
    assert ledger.add_approval("b1", "bob")
    hold = ledger.hold("b1")
    assert hold is not None
    assert (hold.created_by, hold.approvals_needed, hold.approvers) == (
        "carol",
        2,
        ["alice", "bob"],
    )
    assert hold.released_at is None
    assert ledger.releasable() == ["b1"]


def test_a_batch_not_held_is_released_as_stored_until_the_daily_limit(ledger: Ledger) -> None:
    terms = BatchTerms(created_by="carol", policy=POLICY, day_start=DAY)
    store(ledger, "b1", 400, 400, terms=terms)
    store(ledger, "b2", 300, terms=terms)  # 800 + 300 > 1000: waits
    first, second = ledger.hold("b1"), ledger.hold("b2")
    assert first is not None and first.released_at is not None
    assert second is not None and second.released_at is None
    assert second.held_reason == ("daily limit: 800 of 1,000 IDR released today, this batch 300")
    summary = ledger.batch("b2")
    assert summary is not None and summary.counts == {State.HELD: 1}
    # The next local day counts nothing released before it began.
    tomorrow = datetime.now(UTC) + timedelta(minutes=1)
    assert ledger.claim_release("b2", POLICY, DAY) is not None
    assert ledger.claim_release("b2", POLICY, tomorrow) is None
    hold = ledger.hold("b2")
    assert hold is not None and hold.released_at is not None


def test_an_override_lets_a_batch_past_the_daily_limit(ledger: Ledger) -> None:
    store(ledger, "b1", 500, 400, terms=BatchTerms(policy=POLICY, day_start=DAY))
    store(ledger, "b2", 200, terms=BatchTerms(held="x", policy=POLICY, day_start=DAY))
    assert ledger.claim_release("b2", POLICY, DAY) is not None
    ledger.override_limit("b2", "month end, agreed with finance")
    assert ledger.claim_release("b2", POLICY, DAY) is None


def test_rows_over_the_beneficiary_limit_are_named_and_nothing_is_stored(ledger: Ledger) -> None:
    terms = BatchTerms(held="x", policy=POLICY, day_start=DAY)
    ledger.create_orders([payout(400)], batch_id="b1", market="ID", terms=terms)
    same = [payout(100, "9999999999"), payout(300), payout(50, "8888888888")]
    with pytest.raises(OverBeneficiaryLimit) as raised:
        ledger.create_orders(same, batch_id="b2", market="ID", terms=terms)
    assert list(raised.value.rows) == [2]
    assert "would get 700 of 600 IDR today" in raised.value.rows[2]
    assert ledger.batch("b2") is None


def test_the_audit_trail_is_append_only(ledger: Ledger) -> None:
    import psycopg

    from worker.ledger.audit import Action

    ledger.audit(Action.APPROVE, "alice", "cli:host", batch_id="b9", note="ok")
    (event,) = ledger.audit_events(batch_id="b9")
    assert (event.who, event.action, event.origin, event.note) == (
        "alice",
        "approve",
        "cli:host",
        "ok",
    )
    for statement in (
        "UPDATE audit_events SET who = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ):
        with ledger.pool.connection() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    assert ledger.audit_events(batch_id="b9") == [event]


def test_a_batch_held_on_request_waits_for_an_approval_before_the_beat_may_release_it(
    ledger: Ledger,
) -> None:
    ledger.create_orders([payout(100)], batch_id="b1", market="ID", hold=True)
    hold = ledger.hold("b1")
    assert hold is not None and hold.approvals_needed == 1
    assert ledger.releasable() == []
    assert ledger.add_approval("b1", "alice")
    assert ledger.releasable() == ["b1"]
