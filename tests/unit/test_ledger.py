"""The ledger on fakeredis and on a real redis-server (their Lua differs in places)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import redis

from schemas import Payout
from worker.dev.redis_server import RedisServer
from worker.ledger import Ledger
from worker.states import Outcome, State
from worker.vexora import ProviderReport


def payout(amount: str = "100000", reference: str | None = None, currency: str = "IDR") -> Payout:
    fields = {"amount": amount, "bankAccountNo": "5464438554636", "bankCode": "0002"}
    return Payout("ID", currency, Decimal(amount), reference, fields)


@pytest.fixture
def ledger(any_redis: redis.Redis) -> Ledger:
    return Ledger(any_redis, prefix="t")


def create(ledger: Ledger, *payouts: Payout, batch: str = "b1", hold: bool = False) -> list[str]:
    return [
        t for t, _ in ledger.create_orders(list(payouts), batch_id=batch, market="ID", hold=hold)
    ]


def test_create_persists_order_payload_history_and_counts(ledger: Ledger) -> None:
    (trade_no,) = create(ledger, payout("250000", reference="inv-1"))
    order = ledger.get(trade_no)
    assert order is not None
    assert (order.state, order.amount, order.currency, order.reference, order.batch_id) == (
        State.QUEUED, Decimal("250000"), "IDR", "inv-1", "b1",
    )  # fmt: skip
    assert len(trade_no) == 32 and trade_no.isalnum()
    assert ledger.payload(trade_no)["bankAccountNo"] == "5464438554636"
    assert [h for _, h in ledger.history(trade_no)] == ["QUEUED"]
    summary = ledger.batch("b1")
    assert summary is not None
    assert summary.total == 1
    assert summary.counts == {State.QUEUED: 1}
    assert summary.amounts == {State.QUEUED: {"IDR": Decimal("250000")}}


def test_same_reference_returns_the_existing_order(ledger: Ledger) -> None:
    first = ledger.create_orders([payout(reference="r-1")], batch_id="b1", market="ID")
    again = ledger.create_orders(
        [payout(reference="r-1"), payout(reference="r-2")], batch_id="b2", market="ID"
    )
    assert again[0] == (first[0][0], False)
    assert again[1][1] is True
    assert ledger.trade_no_for("r-1") == first[0][0]
    b2 = ledger.batch("b2")
    assert b2 is not None and b2.total == 1


def test_duplicate_reference_inside_one_batch_creates_one_order(ledger: Ledger) -> None:
    result = ledger.create_orders(
        [payout(reference="x"), payout(reference="x")], batch_id="b", market="ID"
    )
    assert result[0][0] == result[1][0]
    assert [created for _, created in result] == [True, False]


def test_bulk_create_spans_chunks_in_row_order(ledger: Ledger) -> None:
    trade_nos = create(ledger, *[payout(str(10000 + i)) for i in range(1203)])
    assert len(set(trade_nos)) == 1203
    pages = list(ledger.iter_batch("b1", page=500))
    assert [t for page in pages for t in page] == trade_nos
    orders = ledger.get_many(trade_nos[:3])
    assert [o.amount for o in orders if o] == [Decimal(10000), Decimal(10001), Decimal(10002)]


def test_transition_moves_indexes_counts_and_amounts(ledger: Ledger) -> None:
    a, b = create(ledger, payout("10000"), payout("20000"))
    assert ledger.transition(a, State.SUBMITTING, expect=[State.QUEUED]).moved
    assert ledger.transition(
        a, State.PROCESSING, platform_trade_no="P1", provider_status="0015"
    ).moved
    order = ledger.get(a)
    assert order is not None
    assert (order.state, order.platform_trade_no, order.provider_status, order.attempts) == (
        State.PROCESSING, "P1", "0015", 1,
    )  # fmt: skip
    assert [t for t, _ in ledger.oldest(State.PROCESSING)] == [a]
    assert [t for t, _ in ledger.oldest(State.QUEUED)] == [b]
    summary = ledger.batch("b1")
    assert summary is not None
    assert summary.counts == {State.QUEUED: 1, State.PROCESSING: 1}
    assert summary.amounts[State.PROCESSING] == {"IDR": Decimal(10000)}
    assert ledger.state_counts() == {State.QUEUED: 1, State.PROCESSING: 1}
    assert [h for _, h in ledger.history(a)] == ["QUEUED", "SUBMITTING", "PROCESSING"]


def test_claim_is_a_compare_and_set(ledger: Ledger) -> None:
    (t,) = create(ledger, payout())
    assert ledger.transition(t, State.SUBMITTING, expect=[State.QUEUED]).moved
    again = ledger.transition(t, State.SUBMITTING, expect=[State.QUEUED])
    assert (again.outcome, again.previous) == ("same", State.SUBMITTING)
    ledger.transition(t, State.UNKNOWN)
    late = ledger.transition(t, State.SUBMITTING, expect=[State.QUEUED])
    assert (late.outcome, late.previous) == ("unexpected", State.UNKNOWN)


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], State.HELD),
        ([], State.UNKNOWN),  # never sent: cannot be in doubt
        ([State.SUBMITTING, State.PROCESSING], State.QUEUED),  # accepted: never resent
        ([State.SUBMITTING, State.PROCESSING], State.CANCELLED),  # sent: cannot cancel
        ([State.SUBMITTING], State.HELD),
    ],
)
def test_forbidden_transitions_change_nothing(
    ledger: Ledger, path: list[State], target: State
) -> None:
    (t,) = create(ledger, payout())
    for state in path:
        assert ledger.transition(t, state).moved
    before = ledger.get(t)
    result = ledger.transition(t, target)
    assert result.outcome == "forbidden"
    assert ledger.get(t) == before


@pytest.mark.parametrize("final", [State.SUCCEEDED, State.FAILED])
def test_final_states_never_change_and_contradictions_are_recorded(
    ledger: Ledger, final: State
) -> None:
    (t,) = create(ledger, payout())
    ledger.transition(t, State.SUBMITTING)
    ledger.transition(t, final)
    other = State.FAILED if final == State.SUCCEEDED else State.SUCCEEDED
    result = ledger.transition(t, other, report=True, note="webhook")
    assert (result.outcome, result.previous) == ("final", final)
    order = ledger.get(t)
    assert order is not None and order.state == final
    assert order.discrepancy == f"{other} webhook"
    assert ledger.discrepancies() == [t]
    summary = ledger.batch("b1")
    assert summary is not None and summary.discrepancies == 1
    # A repeat of the same final report is not a discrepancy.
    assert ledger.transition(t, final, report=True).outcome == "same"
    assert ledger.transition(t, State.QUEUED).outcome == "final"


def test_held_batch_released_or_cancelled(ledger: Ledger) -> None:
    trade_nos = create(ledger, payout(), payout(), payout(), hold=True)
    summary = ledger.batch("b1")
    assert summary is not None and summary.counts == {State.HELD: 3}
    moved = ledger.transition_many(trade_nos[:2], State.QUEUED, expect=[State.HELD])
    assert [m.moved for m in moved] == [True, True]
    cancelled = ledger.transition_many(
        trade_nos, State.CANCELLED, expect=[State.HELD, State.QUEUED]
    )
    assert all(c.moved for c in cancelled)
    summary = ledger.batch("b1")
    assert summary is not None
    assert summary.counts == {State.CANCELLED: 3} and summary.settled
    assert ledger.count(State.HELD) == ledger.count(State.QUEUED) == 0


def test_oldest_pages_by_age(ledger: Ledger) -> None:
    trade_nos = create(ledger, *[payout() for _ in range(5)])
    now = ledger.now_ms()
    assert len(ledger.oldest(State.QUEUED, limit=3)) == 3
    assert ledger.oldest(State.QUEUED, older_than=3600, now_ms=now) == []
    assert {t for t, _ in ledger.oldest(State.QUEUED, now_ms=now + 1)} == set(trade_nos)


def test_unknown_order(ledger: Ledger) -> None:
    assert ledger.get("nope") is None
    assert ledger.transition("nope", State.SUBMITTING).outcome == "missing"
    assert ledger.batch("nope") is None


def test_concurrent_claims_only_one_wins(
    real_redis: redis.Redis, redis_server: RedisServer
) -> None:
    ledger = Ledger(real_redis, prefix="t")
    (t,) = create(ledger, payout())
    clients = [redis_server.client() for _ in range(8)]

    def claim(client: redis.Redis) -> bool:
        return (
            Ledger(client, prefix="t").transition(t, State.SUBMITTING, expect=[State.QUEUED]).moved
        )

    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(claim, clients))
    assert wins.count(True) == 1


def test_provider_report_wins_over_a_requeued_order(ledger: Ledger) -> None:
    """An order put back in QUEUED whose earlier POST did arrive after all."""
    (t,) = create(ledger, payout())
    ledger.transition(t, State.SUBMITTING)
    ledger.transition(t, State.UNKNOWN)
    ledger.transition(t, State.QUEUED, note="provider has no record")
    assert ledger.transition(t, State.SUCCEEDED, report=True, note="webhook").moved
    assert not ledger.transition(t, State.SUBMITTING, expect=[State.QUEUED]).moved
    order = ledger.get(t)
    assert order is not None and order.state is State.SUCCEEDED


# --- apply_report: the one rule for every provider report --------------------------------


def report(state: State, status: str = "0000") -> ProviderReport:
    return ProviderReport(state, "P-1", status, "")


def sent(ledger: Ledger) -> str:
    (trade_no,) = create(ledger, payout())
    assert ledger.transition(trade_no, State.SUBMITTING, expect=[State.QUEUED]).moved
    return trade_no


def test_a_report_moves_a_pending_order_and_stores_the_provider_facts(ledger: Ledger) -> None:
    trade_no = sent(ledger)
    assert ledger.apply_report(trade_no, report(State.PROCESSING, "0015"), source="submit") == (
        Outcome.MOVED
    )
    order = ledger.get(trade_no)
    assert order is not None
    assert (order.state, order.platform_trade_no, order.provider_status) == (
        State.PROCESSING, "P-1", "0015",
    )  # fmt: skip
    assert ledger.history(trade_no)[-1][1] == "PROCESSING submit"


def test_a_replayed_report_is_same_and_changes_nothing(ledger: Ledger) -> None:
    trade_no = sent(ledger)
    ledger.apply_report(trade_no, report(State.SUCCEEDED), source="webhook")
    assert ledger.apply_report(trade_no, report(State.SUCCEEDED), source="webhook") == (
        Outcome.SAME
    )
    summary = ledger.batch("b1")
    assert summary is not None and summary.counts == {State.SUCCEEDED: 1}


def test_a_report_contradicting_a_final_state_is_a_discrepancy_never_applied(
    ledger: Ledger,
) -> None:
    trade_no = sent(ledger)
    ledger.apply_report(trade_no, report(State.SUCCEEDED), source="webhook")
    outcome = ledger.apply_report(trade_no, report(State.FAILED, "00029"), source="lookup")
    assert outcome is Outcome.DISCREPANCY
    order = ledger.get(trade_no)
    assert order is not None and order.state is State.SUCCEEDED
    assert ledger.discrepancies() == [trade_no]


def test_a_late_processing_report_after_a_final_state_is_ignored(ledger: Ledger) -> None:
    trade_no = sent(ledger)
    ledger.apply_report(trade_no, report(State.FAILED, "00029"), source="submit")
    outcome = ledger.apply_report(trade_no, report(State.PROCESSING, "0015"), source="webhook")
    assert outcome is Outcome.IGNORED
    assert ledger.discrepancies() == []


def test_a_report_for_an_unknown_trade_no_is_missing(ledger: Ledger) -> None:
    assert ledger.apply_report("nosuch", report(State.SUCCEEDED), source="webhook") == (
        Outcome.MISSING
    )
