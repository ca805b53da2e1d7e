"""Retry what failed (Producer.retry): FAILED and REVERSED orders enqueued again as a new
batch, each linked to the order it retries, at most once, on the test ledger with a
recording publisher."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from schemas import Payout
from tests import ledger_reads
from tests.unit.ledger_sql import events
from worker.core.exceptions import AlreadyRetried, BatchNotFound
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.flows.producer import Producer, retry_reference
from worker.ledger import Ledger

MARKETS = ("ID", "AR", "JP", "KH")


def settle(ledger: Ledger, trade_nos: Sequence[str], state: State) -> None:
    for trade_no in trade_nos:
        assert ledger.claim(trade_no)[0].moved
        assert ledger.transition(trade_no, state, source="submit").moved


def enqueue(make_producer: Producer, market: str, n: int) -> tuple[str, list[str]]:
    result = make_producer.enqueue_batch(market, list(enumerate(sample_rows(market, n), 1)))
    assert result.batch_id is not None and result.accepted == n
    return result.batch_id, result.trade_nos


def payload(ledger: Ledger, trade_no: str) -> dict[str, str] | None:
    try:
        return ledger_reads.payload(ledger, trade_no)
    except KeyError:
        return None


@pytest.mark.parametrize("market", MARKETS)
def test_failed_orders_are_enqueued_again_with_the_same_fields_new_tradenos_and_a_link(
    make_producer: Producer, ledger: Ledger, published: list[list[str]], market: str
) -> None:
    batch, trade_nos = enqueue(make_producer, market, 6)
    failed, succeeded = trade_nos[:4], trade_nos[4:]
    settle(ledger, failed, State.FAILED)
    settle(ledger, succeeded, State.SUCCEEDED)
    fields = {t: ledger_reads.payload(ledger, t) for t in failed}  # a failed order keeps them
    assert all(payload(ledger, t) is None for t in succeeded)  # a paid one, none
    published.clear()

    result = make_producer.retry(batch)

    assert result.batch_id not in (None, batch) and result.accepted == 4
    assert result.rejected == [] and result.not_retried == {} and result.erased == []
    assert list(result.retries) == failed
    assert published == [result.trade_nos] == [list(result.retries.values())]
    for original, retry in result.retries.items():
        old, new = ledger.get(original), ledger.get(retry)
        assert old is not None and new is not None
        assert new.retry_of == original and new.batch_id == result.batch_id
        assert new.state is State.QUEUED and retry != original
        assert (new.market, new.currency, new.amount) == (old.market, old.currency, old.amount)
        assert new.reference == f"{old.reference}#retry1"
        assert (
            ledger_reads.payload(ledger, retry) == fields[original]
        )  # validated again: the same fields
        assert payload(ledger, original) is None  # the retry holds them now
        assert ledger_reads.trade_no_for(ledger, f"{old.reference}#retry1") == retry
        assert ledger_reads.trade_no_for(ledger, str(old.reference)) == original
        # Its creation event says what it retries.
        assert events(ledger, retry) == [("producer", None, "QUEUED", {"retry_of": original})]


def test_a_batch_retried_twice_pays_nobody_twice(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    batch, trade_nos = enqueue(make_producer, "ID", 3)
    settle(ledger, trade_nos, State.FAILED)
    first = make_producer.retry(batch)
    again = make_producer.retry(batch)
    assert again.batch_id is None and again.accepted == 0 and again.retries == {}
    assert again.not_retried == {t: f"already retried as {r}" for t, r in first.retries.items()}
    assert ledger.state_counts() == {State.FAILED: 3, State.QUEUED: 3}
    # A retry that fails is retried in its turn, once: its reference counts on.
    (one, *_) = first.trade_nos
    settle(ledger, [one], State.FAILED)
    assert first.batch_id is not None
    second = make_producer.retry(first.batch_id)
    (third,) = second.trade_nos
    order = ledger.get(third)
    assert order is not None and order.retry_of == one
    assert order.reference == "demo-id-000000#retry2"
    assert make_producer.retry(first.batch_id).accepted == 0


def test_retry_reference_counts_retries_and_keeps_none() -> None:
    assert retry_reference("inv:7/a") == "inv:7/a#retry1"
    assert retry_reference("inv:7/a#retry1") == "inv:7/a#retry2"
    assert retry_reference("x#retry9") == "x#retry10"
    assert retry_reference(None) is None


def test_what_is_not_retried_says_why(make_producer: Producer, ledger: Ledger) -> None:
    batch, (done, erased, kept) = enqueue(make_producer, "AR", 3)
    settle(ledger, [done], State.SUCCEEDED)  # not a candidate at all
    settle(ledger, [erased, kept], State.FAILED)
    with ledger.pool.connection() as conn:  # as the retention step does past the window
        conn.execute("UPDATE orders SET payload = NULL WHERE trade_no = %s", (erased,))
    result = make_producer.retry(batch)
    assert result.not_retried == {erased: "its fields are erased (past FAILED_PAYLOAD_RETENTION)"}
    assert result.erased == [erased]
    assert result.accepted == 1 and list(result.retries) == [kept]


def test_a_reversed_order_is_named_as_not_retried_for_its_fields_went_when_it_succeeded(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    """A paid payout keeps no personal data, so the details API's reversal of it finds none
    to send again: retry says so for that order, and retries the failures beside it."""
    batch, (reversed_, paid, failed) = enqueue(make_producer, "ID", 3)
    settle(ledger, [reversed_, paid], State.SUCCEEDED)
    settle(ledger, [failed], State.FAILED)
    assert ledger.transition(reversed_, State.REVERSED, source="lookup").moved
    published.clear()

    result = make_producer.retry(batch)

    assert list(result.retries) == [failed] and published == [result.trade_nos]
    assert result.not_retried == {
        reversed_: "its fields were erased when it succeeded; "
        "enqueue it again from your records under a new reference"
    }
    assert result.erased == [reversed_]
    assert result.to_dict()["erased"] == [reversed_]
    assert result.to_dict()["not_retried"] == result.not_retried
    # Asked again, it is named again; the failure is already retried.
    again = make_producer.retry(batch)
    assert again.batch_id is None and again.accepted == 0
    assert again.erased == [reversed_] and list(again.not_retried) == [reversed_, failed]


def test_fields_no_longer_valid_enqueue_nothing_and_name_the_original_row(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    batch, trade_nos = enqueue(make_producer, "JP", 3)
    settle(ledger, trade_nos, State.FAILED)
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET payload = jsonb_set(payload, '{firstname}', '\"taro\"') "
            "WHERE trade_no = %s",
            (trade_nos[2],),
        )
    published.clear()
    result = make_producer.retry(batch)
    assert result.batch_id is None and result.accepted == 0 and published == []
    assert [(e.row, sorted(e.errors)) for e in result.rejected] == [(3, ["firstname"])]
    assert ledger.state_counts() == {State.FAILED: 3}
    assert all(payload(ledger, t) is not None for t in trade_nos)  # nothing erased either


def test_a_held_retry_waits_for_approval(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    batch, trade_nos = enqueue(make_producer, "KH", 2)
    settle(ledger, trade_nos, State.FAILED)
    published.clear()
    result = make_producer.retry(batch, hold=True)
    assert result.held and published == []
    assert ledger.state_counts() == {State.FAILED: 2, State.HELD: 2}


def test_a_reversed_order_with_its_fields_is_retried(
    make_producer: Producer, ledger: Ledger
) -> None:
    batch, (trade_no,) = enqueue(make_producer, "ID", 1)
    settle(ledger, [trade_no], State.FAILED)
    # One reversed before migration 0007 may still hold the fields it kept as SUCCEEDED
    # (the schema allows it; SUCCEEDED no longer does): it is retried as a failure is.
    with ledger.pool.connection() as conn:
        conn.execute("UPDATE orders SET state = 'REVERSED' WHERE trade_no = %s", (trade_no,))
    assert list(make_producer.retry(batch).retries) == [trade_no]


def test_an_unknown_batch_is_an_error(make_producer: Producer) -> None:
    with pytest.raises(BatchNotFound):
        make_producer.retry("bnope")


def test_two_retries_of_one_order_at_once_make_one(make_producer: Producer, ledger: Ledger) -> None:
    """The race the producer's check cannot see: the database keeps the link unique."""
    batch, (bare, referenced) = enqueue(make_producer, "ID", 2)
    settle(ledger, [bare, referenced], State.FAILED)
    with ledger.pool.connection() as conn:
        conn.execute("UPDATE orders SET reference = NULL WHERE trade_no = %s", (bare,))
    candidates = ledger.retry_candidates(batch)
    payouts = {
        order.trade_no: Payout("ID", "IDR", order.amount, retry_reference(order.reference), fields)
        for order, fields, _ in candidates
        if fields is not None
    }
    # Without a reference: the second retry fails whole, and nothing of it is committed.
    ledger.create_orders([payouts[bare]], batch_id="bwon", market="ID", retry_of=[bare])
    with pytest.raises(AlreadyRetried):
        ledger.create_orders([payouts[bare]], batch_id="blost", market="ID", retry_of=[bare])
    assert ledger.batch("blost") is None
    # With one: the second finds the first's order, as an enqueue of a known reference does.
    won = ledger.create_orders(
        [payouts[referenced]], batch_id="bw", market="ID", retry_of=[referenced]
    )
    lost = ledger.create_orders(
        [payouts[referenced]], batch_id="bl", market="ID", retry_of=[referenced]
    )
    assert won[0][1] is True and lost == [(won[0][0], False)]
    assert ledger.state_counts() == {State.FAILED: 2, State.QUEUED: 2}
