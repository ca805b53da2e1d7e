"""Listing batches: newest first, since a time, by what their orders are doing."""

from __future__ import annotations

from decimal import Decimal

from schemas import Payout
from worker.core.states import State
from worker.ledger import Ledger


def payout(reference: str, amount: str = "100000") -> Payout:
    fields = {"amount": amount, "bankAccountNo": "5464438554636", "bankCode": "0002"}
    return Payout("ID", "IDR", Decimal(amount), reference, fields)


def make(ledger: Ledger, batch_id: str, count: int, *, hold: bool = False) -> list[str]:
    payouts = [payout(f"{batch_id}-{i}", str(100000 + i)) for i in range(count)]
    created = ledger.create_orders(payouts, batch_id=batch_id, market="ID", hold=hold)
    return [trade_no for trade_no, _ in created]


def test_batches_are_listed_newest_first_with_their_counts(ledger: Ledger) -> None:
    make(ledger, "b1", 2)
    make(ledger, "b2", 3, hold=True)
    (first, *_) = make(ledger, "b3", 1)
    assert ledger.claim(first)[0].moved
    listed = ledger.batches()
    assert [b.batch_id for b in listed] == ["b3", "b2", "b1"]
    assert listed[0].counts == {State.SUBMITTING: 1}
    assert listed[1].counts == {State.HELD: 3} and listed[1].total == 3
    assert listed[2].amounts == {State.QUEUED: {"IDR": Decimal(200001)}}
    assert listed == [ledger.batch(b.batch_id) for b in listed]
    assert [b.batch_id for b in ledger.batches(limit=1)] == ["b3"]


def test_batches_are_filtered_by_time_and_by_state(ledger: Ledger) -> None:
    make(ledger, "b1", 2)
    make(ledger, "b2", 1, hold=True)
    (done,) = make(ledger, "b3", 1)
    assert ledger.claim(done)[0].moved
    assert ledger.transition(done, State.SUCCEEDED, source="webhook").moved
    assert [b.batch_id for b in ledger.batches(state="held")] == ["b2"]
    assert [b.batch_id for b in ledger.batches(state="open")] == ["b1"]
    assert [b.batch_id for b in ledger.batches(state="settled")] == ["b3"]
    later = ledger.now_ms() + 1
    assert ledger.batches(since_ms=later) == []
    assert len(ledger.batches(since_ms=later - 60_000)) == 3
