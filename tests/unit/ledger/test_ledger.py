"""The ledger, on the session's private PostgreSQL server (its ledger database, emptied
before each test)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from schemas import Payout, validate_rows
from tests import ledger_reads
from tests.unit.ledger_sql import PERSONAL_NUMBERS, backdate, numbers_in_the_database
from worker.core.samples import sample_rows
from worker.core.states import FINAL_STATES, TRANSITIONS, Outcome, State
from worker.db.pool import open_pool
from worker.dev.redis_server import free_port
from worker.flows import retention
from worker.ledger import PAYLOAD_KEPT, Ledger, Transition, TransitionOutcome, new_trade_no
from worker.ledger import queries as ledger_queries
from worker.ledger.sql import OPEN_STATES
from worker.provider.report import ProviderReport

ACCOUNT = "5464438554636"


def payout(
    amount: str = "100000",
    reference: str | None = None,
    currency: str = "IDR",
    account: str = ACCOUNT,
) -> Payout:
    fields = {"amount": amount, "bankAccountNo": account, "bankCode": "0002"}
    return Payout("ID", currency, Decimal(amount), reference, fields)


@pytest.fixture
def database(ledger: Ledger, ledger_url: str) -> str:
    """The URL of the ledger's database (emptied by ``ledger``), to read it directly."""
    return ledger_url


def create(ledger: Ledger, *payouts: Payout, batch: str = "b1", hold: bool = False) -> list[str]:
    return [
        t for t, _ in ledger.create_orders(list(payouts), batch_id=batch, market="ID", hold=hold)
    ]


def rows(database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database) as conn:
        return conn.execute(query, params).fetchall()


def test_create_persists_order_payload_history_and_counts(ledger: Ledger) -> None:
    (trade_no,) = create(ledger, payout("250000", reference="inv-1"))
    order = ledger.get(trade_no)
    assert order is not None
    assert (order.state, order.amount, order.currency, order.reference, order.batch_id) == (
        State.QUEUED, Decimal("250000"), "IDR", "inv-1", "b1",
    )  # fmt: skip
    assert (order.attempts, order.row_no, order.state_entered_ms) == (0, 1, order.created_ms)
    assert order.masked is not None
    assert (order.masked["bankAccountNo"], order.masked["bankCode"]) == ("*********4636", "0002")
    assert len(trade_no) == 32 and trade_no.isalnum()
    assert ledger_reads.payload(ledger, trade_no)["bankAccountNo"] == ACCOUNT
    assert [h for _, h in ledger_reads.history(ledger, trade_no)] == ["QUEUED producer"]
    summary = ledger.batch("b1")
    assert summary is not None
    assert (summary.total, summary.market, summary.created_ms) == (1, "ID", order.created_ms)
    assert summary.counts == {State.QUEUED: 1}
    assert summary.amounts == {State.QUEUED: {"IDR": Decimal("250000")}}


def test_same_reference_returns_the_existing_order(ledger: Ledger) -> None:
    first = ledger.create_orders([payout(reference="r-1")], batch_id="b1", market="ID")
    again = ledger.create_orders(
        [payout(reference="r-1"), payout(reference="r-2")], batch_id="b2", market="ID"
    )
    assert again[0] == (first[0][0], False)
    assert again[1][1] is True
    assert ledger_reads.trade_no_for(ledger, "r-1") == first[0][0]
    assert ledger_reads.trade_no_for(ledger, "r-3") is None
    b2 = ledger.batch("b2")
    assert b2 is not None and b2.total == 1 and b2.counts == {State.QUEUED: 1}


def test_duplicate_reference_inside_one_batch_creates_one_order(ledger: Ledger) -> None:
    result = ledger.create_orders(
        [payout(reference="x"), payout(reference="x")], batch_id="b", market="ID"
    )
    assert result[0][0] == result[1][0]
    assert [created for _, created in result] == [True, False]


def test_each_row_maps_to_its_order_in_input_order(ledger: Ledger, database: str) -> None:
    """Rows go into the ledger sorted by reference; the answer keeps the caller's order."""
    ((known, _),) = ledger.create_orders([payout(reference="r-5")], batch_id="b0", market="ID")
    refs = [None, "r-9", "r-5", "r-1", "r-9", None, "r-0"]
    result = ledger.create_orders([payout(reference=r) for r in refs], batch_id="b", market="ID")
    assert [created for _, created in result] == [True, True, False, True, False, True, True]
    assert result[2][0] == known and result[4][0] == result[1][0]
    assert len({t for t, _ in result}) == 6
    stored = rows(database, "SELECT trade_no, row_no, reference FROM orders WHERE batch_id = 'b'")
    assert sorted(stored, key=lambda r: r[1]) == [
        (result[0][0], 1, None), (result[1][0], 2, "r-9"), (result[3][0], 4, "r-1"),
        (result[5][0], 6, None), (result[6][0], 7, "r-0"),
    ]  # fmt: skip
    assert rows(database, "SELECT count(*) FROM order_events") == [(6,)]
    assert rows(database, "SELECT row_count FROM batches WHERE id = 'b'") == [(5,)]


def test_payouts_handed_over_one_by_one_are_stored_all_or_nothing(
    ledger: Ledger, database: str
) -> None:
    seen: list[Any] = []

    def payouts(fail: bool) -> Iterator[Payout]:
        for i in range(2000):
            yield payout(reference=f"g-{i}")
        seen.append(rows(database, "SELECT count(*) FROM orders"))  # from elsewhere
        if fail:
            raise RuntimeError("the caller gives up")

    with pytest.raises(RuntimeError, match="gives up"):
        ledger.create_orders(payouts(fail=True), batch_id="b1", market="ID")
    everything = (
        "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM batches), "
        "(SELECT count(*) FROM order_events)"
    )
    assert seen == [[(0,)]] and rows(database, everything) == [(0, 0, 0)]
    created = ledger.create_orders(payouts(fail=False), batch_id="b2", market="ID")
    assert len(created) == 2000 and all(is_new for _, is_new in created)
    assert seen[1] == [(0,)] and rows(database, everything) == [(2000, 1, 2000)]


def test_orders_without_a_reference_are_all_created(ledger: Ledger) -> None:
    result = ledger.create_orders([payout(), payout()], batch_id="b", market="ID")
    assert [created for _, created in result] == [True, True]
    assert result[0][0] != result[1][0]


def test_bulk_create_pages_in_row_order(ledger: Ledger) -> None:
    payouts = [payout(str(10000 + i), reference=f"r-{1202 - i:05d}") for i in range(1203)]
    trade_nos = create(ledger, *payouts)
    assert len(set(trade_nos)) == 1203
    pages = list(ledger.iter_batch("b1", page=500))
    assert [len(page) for page in pages] == [500, 500, 203]
    assert [t for page in pages for t in page] == trade_nos
    orders = ledger.get_many([trade_nos[2], "nope", trade_nos[0]])
    assert [o.amount if o else None for o in orders] == [Decimal(10002), None, Decimal(10000)]


def test_amounts_are_exact_decimals(ledger: Ledger) -> None:
    create(ledger, payout("463.86", currency="USD"), payout("0.01", currency="USD"))
    summary = ledger.batch("b1")
    assert summary is not None
    assert summary.amounts == {State.QUEUED: {"USD": Decimal("463.87")}}
    assert str(summary.amounts[State.QUEUED]["USD"]) == "463.87"


def test_a_failed_enqueue_leaves_nothing(ledger: Ledger, database: str) -> None:
    create(ledger, payout(reference="a"), batch="b1")
    with pytest.raises(psycopg.errors.UniqueViolation):
        create(ledger, payout(reference="b"), batch="b1")  # the batch id is taken
    assert ledger_reads.trade_no_for(ledger, "b") is None
    assert rows(database, "SELECT count(*) FROM order_events") == [(1,)]


def test_transition_moves_counts_amounts_and_scans(ledger: Ledger) -> None:
    a, b = create(ledger, payout("10000"), payout("20000"))
    assert ledger.transition(a, State.SUBMITTING, source="submit", expect=[State.QUEUED]).moved
    assert ledger.transition(
        a, State.PROCESSING, source="submit", platform_trade_no="P1", provider_status="0015"
    ).moved
    order = ledger.get(a)
    assert order is not None
    assert (order.state, order.platform_trade_no, order.provider_status, order.attempts) == (
        State.PROCESSING, "P1", "0015", 1,
    )  # fmt: skip
    assert ledger_reads.entered_ms(ledger, a, State.PROCESSING) == order.state_entered_ms
    assert ledger_reads.entered_ms(ledger, a, State.QUEUED) is None
    now = ledger.now_ms()
    assert [t for t, _ in ledger.scan(State.PROCESSING, older_than=0, now_ms=now)] == [a]
    assert [t for t, _ in ledger.scan(State.QUEUED, older_than=0, now_ms=now)] == [b]
    summary = ledger.batch("b1")
    assert summary is not None
    assert summary.counts == {State.QUEUED: 1, State.PROCESSING: 1}
    assert summary.amounts[State.PROCESSING] == {"IDR": Decimal(10000)}
    assert ledger.state_counts() == {State.QUEUED: 1, State.PROCESSING: 1}
    assert (ledger.count(State.QUEUED), ledger.count(State.HELD)) == (1, 0)
    assert [h for _, h in ledger_reads.history(ledger, a)] == [
        "QUEUED producer",
        "SUBMITTING submit",
        "PROCESSING submit",
    ]


def test_claim_is_a_compare_and_set_that_returns_the_payload(ledger: Ledger, database: str) -> None:
    (t,) = create(ledger, payout())
    claimed, payload = ledger.claim(t)
    assert (claimed.outcome, claimed.previous) == ("ok", State.QUEUED)
    assert payload == {"amount": "100000", "bankAccountNo": ACCOUNT, "bankCode": "0002"}
    order = ledger.get(t)
    assert order is not None and (order.state, order.attempts) == (State.SUBMITTING, 1)
    assert ledger_reads.entered_ms(ledger, t, State.SUBMITTING) == order.state_entered_ms
    assert rows(database, "SELECT source, from_state, to_state FROM order_events ORDER BY id") == [
        ("producer", None, "QUEUED"),
        ("submit", "QUEUED", "SUBMITTING"),
    ]
    again, payload = ledger.claim(t)
    assert (again.outcome, again.previous, payload) == ("same", State.SUBMITTING, None)
    ledger.transition(t, State.UNKNOWN, source="submit")
    late, payload = ledger.claim(t)
    assert (late.outcome, late.previous, payload) == ("unexpected", State.UNKNOWN, None)
    assert ledger.claim("nope") == (Transition(TransitionOutcome.MISSING, None), None)
    order = ledger.get(t)
    assert order is not None and order.attempts == 1


def test_claims_and_answers_are_one_statement_with_apply_reports_rule(
    ledger: Ledger, database: str
) -> None:
    sent, contradicted, first, second = create(ledger, *(payout() for _ in range(4)))
    ledger.claim(sent)
    ledger.claim(contradicted)
    ledger.apply_report(
        contradicted, ProviderReport(State.SUCCEEDED, "P-9", "0000", ""), source="webhook"
    )
    accepted = ProviderReport(State.PROCESSING, "P-1", "0015", "Processing")
    failed = ProviderReport(State.FAILED, "P-9", "00029", "rejected")
    claims = ledger.claim_many(
        [second, first, "nope"], answers=[(sent, accepted), (contradicted, failed)]
    )
    assert [(c.outcome, c.previous) for c, _ in claims] == [
        ("ok", State.QUEUED),
        ("ok", State.QUEUED),
        ("missing", None),
    ]
    assert [fields is not None and fields["bankAccountNo"] == ACCOUNT for _, fields in claims] == [
        True,
        True,
        False,
    ]
    order = ledger.get(sent)
    assert order is not None
    assert (order.state, order.platform_trade_no, order.provider_status) == (
        State.PROCESSING,
        "P-1",
        "0015",
    )
    # A failure reported for a SUCCEEDED order: recorded, not applied, marked for a recheck.
    order = ledger.get(contradicted)
    assert order is not None and order.state is State.SUCCEEDED
    assert order.discrepancy and order.recheck_ms is not None
    changes = rows(
        database,
        "SELECT count(DISTINCT xmin::text) FROM order_events WHERE source = 'submit' "
        "AND (to_state = 'PROCESSING' OR trade_no = ANY(%s))",
        [first, second],
    )
    assert changes == [(1,)]  # the answer and both claims in one transaction


def test_one_statement_moves_an_order_once(ledger: Ledger) -> None:
    (t,) = create(ledger, payout())
    with pytest.raises(ValueError, match="at most once"):
        ledger.claim_many([t, t])
    accepted = ProviderReport(State.PROCESSING, "P-1", "0015", "")
    with pytest.raises(ValueError, match="at most once"):
        ledger.claim_many([t], answers=[(t, accepted)])
    assert ledger_reads.history(ledger, t)[-1][1] == "QUEUED producer"  # nothing changed


def test_a_requeued_order_is_claimed_again_as_a_new_attempt(ledger: Ledger) -> None:
    (t,) = create(ledger, payout())
    ledger.claim(t)
    ledger.transition(t, State.QUEUED, source="submit", expect=[State.SUBMITTING], note="paused")
    claimed, payload = ledger.claim(t)
    assert claimed.moved and payload is not None
    order = ledger.get(t)
    assert order is not None and order.attempts == 2
    assert [h for _, h in ledger_reads.history(ledger, t)][-2:] == [
        "QUEUED submit paused",
        "SUBMITTING submit",
    ]


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], State.HELD),
        ([], State.UNKNOWN),  # never sent: cannot be in doubt
        ([State.SUBMITTING, State.PROCESSING], State.QUEUED),  # accepted: never resent
        ([State.SUBMITTING, State.PROCESSING], State.CANCELLED),  # sent: cannot cancel
        ([State.SUBMITTING], State.HELD),
        ([State.SUBMITTING, State.PROCESSING], State.REVERSED),  # only a success reverses
    ],
)
def test_forbidden_transitions_change_nothing(
    ledger: Ledger, database: str, path: list[State], target: State
) -> None:
    (t,) = create(ledger, payout())
    for state in path:
        assert ledger.transition(t, state, source="submit").moved
    before = ledger.get(t)
    events = rows(database, "SELECT count(*) FROM order_events")
    result = ledger.transition(t, target, source="operator")
    assert result.outcome == "forbidden"
    assert ledger.get(t) == before
    assert rows(database, "SELECT count(*) FROM order_events") == events


def path_to(state: State) -> list[State]:
    """Moves that bring a new QUEUED order to ``state`` (HELD: created held)."""
    paths = {
        State.HELD: [],
        State.QUEUED: [],
        State.SUBMITTING: [State.SUBMITTING],
        State.PROCESSING: [State.SUBMITTING, State.PROCESSING],
        State.UNKNOWN: [State.SUBMITTING, State.UNKNOWN],
        State.REVIEW: [State.SUBMITTING, State.REVIEW],
        State.SUCCEEDED: [State.SUBMITTING, State.SUCCEEDED],
        State.FAILED: [State.SUBMITTING, State.FAILED],
        State.CANCELLED: [State.CANCELLED],
        State.REVERSED: [State.SUBMITTING, State.SUCCEEDED, State.REVERSED],
    }
    return paths[state]


def test_every_pair_of_states_moves_exactly_as_the_table_says(ledger: Ledger) -> None:
    pairs = [(source, target) for source in State for target in State if source is not target]
    trade_nos: dict[tuple[State, State], str] = {}
    for source in State:
        group = [pair for pair in pairs if pair[0] is source]
        made = create(
            ledger, *[payout() for _ in group], batch=f"b-{source}", hold=source is State.HELD
        )
        for state in path_to(source):
            assert all(r.moved for r in ledger.transition_many(made, state, source="operator"))
        trade_nos.update(zip(group, made, strict=True))
    for (source, target), trade_no in trade_nos.items():
        result = ledger.transition(trade_no, target, source="operator")
        assert result.previous is source
        assert result.moved == (target in TRANSITIONS[source]), (source, target)
        if not result.moved:
            assert result.outcome == ("final" if source in FINAL_STATES else "forbidden")


def test_the_schema_knows_the_final_states_of_the_code(database: str) -> None:
    """The CHECK that erases personal data, the index of open orders and the index of the
    payloads kept name the same states as worker/core/states.py and worker/ledger.py (SQL
    cannot import the Python tables)."""
    (check,) = rows(
        database,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'orders_final_without_payload'",
    )
    (index,) = rows(database, "SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_open'")
    (kept,) = rows(
        database, "SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_payload_kept'"
    )
    assert set(re.findall(r"'(\w+)'", check[0])) == FINAL_STATES - PAYLOAD_KEPT
    assert set(re.findall(r"'(\w+)'", index[0])) == FINAL_STATES
    assert set(re.findall(r"'(\w+)'", kept[0])) == PAYLOAD_KEPT


@pytest.mark.parametrize("final", [State.SUCCEEDED, State.FAILED])
def test_final_states_never_change_and_contradictions_are_recorded(
    ledger: Ledger, database: str, final: State
) -> None:
    (t,) = create(ledger, payout())
    ledger.transition(t, State.SUBMITTING, source="submit")
    ledger.transition(t, final, source="submit", provider_status="first")
    other = State.FAILED if final == State.SUCCEEDED else State.SUCCEEDED
    result = ledger.transition(
        t, other, source="webhook", report=True, provider_status="contradicts"
    )
    assert (result.outcome, result.previous) == ("final", final)
    order = ledger.get(t)
    assert order is not None and order.state == final
    assert order.provider_status == "first"  # the contradicting facts are not applied
    assert order.discrepancy == f"{other} webhook"
    assert ledger_reads.discrepancies(ledger) == [t]
    summary = ledger.batch("b1")
    assert summary is not None and summary.discrepancies == 1
    assert summary.counts == {final: 1}
    (event,) = rows(
        database, "SELECT source, from_state, to_state, facts FROM order_events WHERE id = "
        "(SELECT max(id) FROM order_events)",
    )  # fmt: skip
    assert event == (
        "webhook",
        final,
        final,
        {"discrepancy": str(other), "provider_status": "contradicts"},
    )
    assert ledger_reads.history(ledger, t)[-1][1] == f"DISCREPANCY {other} webhook"
    # A repeat of the same final report is not a discrepancy.
    assert ledger.transition(t, final, source="webhook", report=True).outcome == "same"
    # Not from the provider: refused, not recorded.
    assert ledger.transition(t, State.QUEUED, source="operator").outcome == "final"
    assert ledger.transition(t, other, source="operator").outcome == "final"
    summary = ledger.batch("b1")
    assert summary is not None and summary.discrepancies == 1


def test_discrepancies_list_the_latest_first(ledger: Ledger) -> None:
    a, b = create(ledger, payout(), payout())
    for t in (a, b):
        ledger.transition(t, State.SUBMITTING, source="submit")
        ledger.transition(t, State.SUCCEEDED, source="submit")
    for t in (a, b, a):
        ledger.transition(t, State.FAILED, source="lookup", report=True)
    assert ledger_reads.discrepancies(ledger) == [a, b]
    assert ledger_reads.discrepancies(ledger, limit=1) == [a]
    summary = ledger.batch("b1")
    assert summary is not None and summary.discrepancies == 3  # reports, as they came


def test_held_batch_released_or_cancelled(ledger: Ledger) -> None:
    trade_nos = create(ledger, payout(), payout(), payout(), hold=True)
    summary = ledger.batch("b1")
    assert summary is not None and summary.counts == {State.HELD: 3}
    moved = ledger.transition_many(
        trade_nos[:2], State.QUEUED, source="operator", expect=[State.HELD], note="approved"
    )
    assert [m.moved for m in moved] == [True, True]
    cancelled = ledger.transition_many(
        [*trade_nos, "nope"], State.CANCELLED, source="operator", expect=[State.HELD, State.QUEUED]
    )
    assert [c.outcome for c in cancelled] == ["ok", "ok", "ok", "missing"]
    summary = ledger.batch("b1")
    assert summary is not None
    assert summary.counts == {State.CANCELLED: 3} and summary.settled
    assert ledger.count(State.HELD) == ledger.count(State.QUEUED) == 0
    with pytest.raises(KeyError):
        ledger_reads.payload(ledger, trade_nos[0])  # final: erased


def test_the_held_note(ledger: Ledger) -> None:
    create(ledger, payout(), hold=True)
    ledger.set_batch_note("b1", "held", "balance 50000 IDR short")
    summary = ledger.batch("b1")
    assert summary is not None and summary.held_reason == "balance 50000 IDR short"
    ledger.set_batch_note("b1", "held", None)
    summary = ledger.batch("b1")
    assert summary is not None and summary.held_reason is None
    with pytest.raises(ValueError, match="unknown batch note 'colour'"):
        ledger.set_batch_note("b1", "colour", "red")


def test_a_scan_takes_the_orders_in_the_state_for_long_enough(ledger: Ledger) -> None:
    trade_nos = create(ledger, *[payout() for _ in range(5)])
    now = ledger.now_ms()
    assert list(ledger.scan(State.QUEUED, older_than=3600, now_ms=now)) == []
    found = list(ledger.scan(State.QUEUED, older_than=0, now_ms=now + 1))
    assert {t for t, _ in found} == set(trade_nos)
    order = ledger.get(trade_nos[0])
    assert order is not None and {ms for _, ms in found} == {order.state_entered_ms}


def test_a_scan_reads_oldest_first_and_skips_nothing_that_stays(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages by key, not offset: orders leaving the state mid-scan shift nothing."""
    monkeypatch.setattr(ledger_queries, "PAGE", 10)
    first = create(ledger, *[payout() for _ in range(25)], batch="b1")  # one instant: ties
    second = create(ledger, *[payout() for _ in range(15)], batch="b2")
    now = ledger.now_ms()
    while ledger.now_ms() <= now:  # the scan counts whole milliseconds
        pass
    late = create(ledger, *[payout() for _ in range(3)], batch="b3")  # too young
    scan = ledger.scan(State.QUEUED, older_than=0, now_ms=now)
    seen = [next(scan) for _ in range(5)]
    # Meanwhile: orders already read and orders not read yet are claimed.
    left = {t for t, _ in seen[:3]} | set(sorted(first)[10:14]) | set(second[:2])
    for trade_no in left:
        assert ledger.claim(trade_no)[0].moved
    seen += list(scan)
    stayed = {t for t in first + second if t not in left}
    read = [t for t, _ in seen]
    assert len(read) == len(set(read))
    assert stayed <= set(read) and not set(read) & set(late)
    assert [ms for _, ms in seen] == sorted(ms for _, ms in seen)
    assert set(read) - stayed <= left


def test_the_sweeper_restarts_the_queued_clock(ledger: Ledger) -> None:
    a, b = create(ledger, payout(), payout())
    ledger.claim(b)
    before = ledger_reads.entered_ms(ledger, a, State.QUEUED)
    assert ledger.restart_queued([a, b, "nope"]) == [a]
    after = ledger_reads.entered_ms(ledger, a, State.QUEUED)
    assert before is not None and after is not None and after >= before
    assert ledger_reads.history(ledger, a)[-1][1] == "QUEUED sweeper republished"
    order = ledger.get(a)
    assert order is not None and order.state is State.QUEUED


def test_a_claim_is_stale_only_past_its_lease(ledger: Ledger, database: str) -> None:
    queued, claimed = create(ledger, payout(), payout())
    ledger.claim(claimed)
    assert not ledger.stale_claim(claimed, lease=60)
    backdate(ledger, claimed, 61)
    assert ledger.stale_claim(claimed, lease=60)
    assert not ledger.stale_claim(queued, lease=0)  # not claimed at all
    assert not ledger.stale_claim("nope", lease=0)


def test_the_first_claim_is_read_from_the_events(ledger: Ledger, database: str) -> None:
    (t,) = create(ledger, payout())
    assert ledger.first_claimed_ms(t) is None
    ledger.claim(t)
    backdate(ledger, t, 3600)
    ledger.transition(t, State.QUEUED, source="submit", expect=[State.SUBMITTING])
    ledger.claim(t)  # a second attempt: the first one counts
    first, last = [
        ms for ms, entry in ledger_reads.history(ledger, t) if entry.startswith("SUBMITTING")
    ]
    assert ledger.first_claimed_ms(t) == first and last - first >= 3_600_000


def test_open_states_count_the_orders_not_final_and_their_oldest(
    ledger: Ledger, database: str
) -> None:
    old, young, done, held = create(ledger, payout(), payout(), payout(), payout())
    for t in (old, young, done):
        ledger.claim(t)
        ledger.transition(t, State.UNKNOWN, source="submit")
    ledger.transition(done, State.FAILED, source="lookup")
    ledger.transition(held, State.CANCELLED, source="operator")
    backdate(ledger, old, 90)
    entered = {t: ledger_reads.entered_ms(ledger, t, State.UNKNOWN) for t in (old, young)}
    assert ledger.open_states() == {State.UNKNOWN: (2, entered[old])}
    # The partial index can serve it (a table this small is read whole otherwise).
    with psycopg.connect(database) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(sql.SQL("EXPLAIN ") + OPEN_STATES).fetchall()
    assert "orders_open" in str(plan)


def test_orders_made_final_are_reported_as_they_go(ledger: Ledger) -> None:
    finals: list[tuple[State, int]] = []
    counting = Ledger(ledger.pool, on_final=lambda state, n: finals.append((state, n)))
    a, b, c = create(counting, payout(), payout(), payout())
    counting.transition_many([a, b, c], State.CANCELLED, source="operator", expect=[State.QUEUED])
    counting.transition_many([a, b], State.CANCELLED, source="operator")  # already: no move
    assert finals == [(State.CANCELLED, 3)]


def test_ping_says_whether_the_server_answers(ledger: Ledger) -> None:
    ledger.ping()
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/ledger"
    with open_pool(nobody, timeout=0.5) as down, pytest.raises(psycopg.OperationalError):
        Ledger(down).ping()


def test_unknown_order(ledger: Ledger) -> None:
    assert ledger.get("nope") is None
    assert ledger.transition("nope", State.SUBMITTING, source="submit").outcome == "missing"
    assert ledger.batch("nope") is None
    assert ledger_reads.history(ledger, "nope") == []
    with pytest.raises(KeyError):
        ledger_reads.payload(ledger, "nope")


def test_concurrent_claims_only_one_wins(ledger: Ledger) -> None:
    (t,) = create(ledger, payout())
    start = threading.Barrier(8)

    def claim(_: int) -> tuple[bool, bool]:
        start.wait()
        claimed, payload = ledger.claim(t)
        return claimed.moved, payload is not None

    with ThreadPoolExecutor(8) as threads:
        results = list(threads.map(claim, range(8)))
    assert results.count((True, True)) == 1
    assert results.count((False, False)) == 7
    order = ledger.get(t)
    assert order is not None and order.attempts == 1
    assert [h for _, h in ledger_reads.history(ledger, t)] == [
        "QUEUED producer",
        "SUBMITTING submit",
    ]


def test_a_claim_racing_a_cancel_one_wins_and_the_other_sees_its_state(
    ledger: Ledger, database: str
) -> None:
    trade_nos = create(ledger, *[payout() for _ in range(200)])
    together = threading.Barrier(2)

    def each(move: Callable[[str], Transition]) -> list[Transition]:
        results = []
        for trade_no in trade_nos:
            together.wait()  # both threads go at each order at the same moment
            results.append(move(trade_no))
        return results

    def claim(trade_no: str) -> Transition:
        return ledger.claim(trade_no)[0]

    def cancel(trade_no: str) -> Transition:
        return ledger.transition(
            trade_no, State.CANCELLED, source="operator", expect=[State.QUEUED]
        )

    with ThreadPoolExecutor(2) as threads:
        claiming, cancelling = threads.submit(each, claim), threads.submit(each, cancel)
        claimed, cancelled = claiming.result(), cancelling.result()
    for trade_no, by_claim, by_cancel in zip(trade_nos, claimed, cancelled, strict=True):
        order = ledger.get(trade_no)
        assert order is not None
        assert by_claim.moved != by_cancel.moved
        winner, loser = (by_claim, by_cancel) if by_claim.moved else (by_cancel, by_claim)
        assert winner.previous is State.QUEUED
        # The loser saw the order as the winner left it, never a stale QUEUED.
        assert (loser.outcome, loser.previous) == ("unexpected", order.state)
    assert rows(database, "SELECT count(*) FROM order_events") == [(400,)]


SHARED = ("shared-first", "shared-last")


def test_concurrent_enqueues_of_one_reference_make_one_order(database: str) -> None:
    # Every thread's connection is open before they start: their enqueues overlap.
    with ConnectionPool(database, min_size=4, max_size=4) as pool:
        pool.wait()
        ledger = Ledger(pool)
        results = enqueue_concurrently(ledger)
        for ref in SHARED:
            found = [answer for r, answer in results if r == ref]
            assert len(found) == 4
            assert len({trade_no for trade_no, _ in found}) == 1
            assert sum(created for _, created in found) == 1
            assert ledger_reads.trade_no_for(ledger, ref) == found[0][0]
    assert rows(database, "SELECT count(*) FROM orders") == [(2 + 4 * 1000,)]
    assert rows(database, "SELECT sum(row_count) FROM batches") == [(2 + 4 * 1000,)]


def enqueue_concurrently(ledger: Ledger) -> list[tuple[str, tuple[str, bool]]]:
    """Four threads enqueue 1,000 references of their own between the two SHARED ones,
    half of them in the opposite order; returns (reference, (tradeNo, created))."""
    start = threading.Barrier(4)

    def enqueue(n: int) -> list[tuple[str, tuple[str, bool]]]:
        refs = [SHARED[0], *(f"own-{n}-{i}" for i in range(1000)), SHARED[1]]
        if n % 2:
            refs.reverse()  # the same references in the opposite order: no deadlock either
        payouts = [payout(reference=r) for r in refs]
        start.wait()
        created = ledger.create_orders(payouts, batch_id=f"b{n}", market="ID")
        return list(zip(refs, created, strict=True))

    with ThreadPoolExecutor(4) as threads:
        return [pair for result in threads.map(enqueue, range(4)) for pair in result]


def test_provider_report_wins_over_a_requeued_order(ledger: Ledger) -> None:
    """An order put back in QUEUED whose earlier POST did arrive after all."""
    (t,) = create(ledger, payout())
    ledger.transition(t, State.SUBMITTING, source="submit")
    ledger.transition(t, State.UNKNOWN, source="submit")
    ledger.transition(t, State.QUEUED, source="lookup", note="provider has no record")
    assert ledger.transition(t, State.SUCCEEDED, source="webhook", report=True).moved
    assert not ledger.claim(t)[0].moved
    order = ledger.get(t)
    assert order is not None and order.state is State.SUCCEEDED


def test_the_no_record_mark_lasts_until_the_next_claim(ledger: Ledger) -> None:
    (t,) = create(ledger, payout())
    ledger.claim(t)
    ledger.transition(t, State.UNKNOWN, source="submit")
    order = ledger.get(t)
    assert order is not None and order.unseen_ms is None
    now = ledger.now_ms()
    ledger.note_unseen(order, now)
    order = ledger.get(t)
    assert order is not None and (order.unseen_ms, order.resubmits) == (now, 0)
    ledger.transition(t, State.QUEUED, source="lookup", expect=[State.UNKNOWN], resubmits=1)
    ledger.claim(t)
    order = ledger.get(t)
    assert order is not None and (order.unseen_ms, order.resubmits) == (None, 1)
    # A mark for a state the order has left is not stored.
    stale = ledger.get(t)
    ledger.transition(t, State.UNKNOWN, source="submit")
    assert stale is not None
    ledger.note_unseen(stale, now)
    order = ledger.get(t)
    assert order is not None and order.unseen_ms is None


# --- apply_report: the one rule for every provider report --------------------------------


def report(state: State, status: str = "0000") -> ProviderReport:
    return ProviderReport(state, "P-1", status, "")


def sent(ledger: Ledger) -> str:
    (trade_no,) = create(ledger, payout())
    assert ledger.claim(trade_no)[0].moved
    return trade_no


def test_a_report_moves_a_pending_order_and_stores_the_provider_facts(
    ledger: Ledger, database: str
) -> None:
    trade_no = sent(ledger)
    assert ledger.apply_report(trade_no, report(State.PROCESSING, "0015"), source="submit") == (
        Outcome.MOVED
    )
    order = ledger.get(trade_no)
    assert order is not None
    assert (order.state, order.platform_trade_no, order.provider_status) == (
        State.PROCESSING, "P-1", "0015",
    )  # fmt: skip
    assert ledger_reads.history(ledger, trade_no)[-1][1] == "PROCESSING submit"
    assert rows(database, "SELECT facts FROM order_events ORDER BY id DESC LIMIT 1") == [
        ({"platform_trade_no": "P-1", "provider_status": "0015", "provider_message": ""},)
    ]


def test_a_replayed_report_is_same_and_refreshes_only_the_facts(ledger: Ledger) -> None:
    trade_no = sent(ledger)
    ledger.apply_report(trade_no, report(State.PROCESSING, "0015"), source="submit")
    before = ledger.get(trade_no)
    assert ledger.apply_report(trade_no, report(State.PROCESSING, "0016"), source="lookup") == (
        Outcome.SAME
    )
    after = ledger.get(trade_no)
    assert before is not None and after is not None
    assert after.provider_status == "0016"
    assert (after.updated_ms, after.state_entered_ms) == (
        before.updated_ms,
        before.state_entered_ms,
    )
    assert len(ledger_reads.history(ledger, trade_no)) == 3
    summary = ledger.batch("b1")
    assert summary is not None and summary.counts == {State.PROCESSING: 1}


def test_a_report_contradicting_a_final_state_is_a_discrepancy_never_applied(
    ledger: Ledger,
) -> None:
    trade_no = sent(ledger)
    ledger.apply_report(trade_no, report(State.SUCCEEDED), source="webhook")
    outcome = ledger.apply_report(trade_no, report(State.FAILED, "00029"), source="lookup")
    assert outcome is Outcome.DISCREPANCY
    order = ledger.get(trade_no)
    assert order is not None and order.state is State.SUCCEEDED
    assert order.provider_status == "0000"
    assert ledger_reads.discrepancies(ledger) == [trade_no]


def test_a_late_processing_report_after_a_final_state_is_ignored(ledger: Ledger) -> None:
    trade_no = sent(ledger)
    ledger.apply_report(trade_no, report(State.FAILED, "00029"), source="submit")
    outcome = ledger.apply_report(trade_no, report(State.PROCESSING, "0015"), source="webhook")
    assert outcome is Outcome.IGNORED
    assert ledger_reads.discrepancies(ledger) == []


def test_a_report_for_an_unknown_trade_no_is_missing(ledger: Ledger) -> None:
    assert ledger.apply_report("nosuch", report(State.SUCCEEDED), source="webhook") == (
        Outcome.MISSING
    )


def test_a_success_reverses(ledger: Ledger) -> None:
    trade_no = sent(ledger)
    ledger.apply_report(trade_no, report(State.SUCCEEDED), source="webhook")
    assert ledger.apply_report(trade_no, report(State.REVERSED), source="lookup") == (Outcome.MOVED)
    assert ledger_reads.discrepancies(ledger) == []


# --- personal data ---------------------------------------------------------------------


def sample_payouts(per_market: int) -> list[Payout]:
    payouts: list[Payout] = []
    for market in ("ID", "AR", "JP", "KH"):
        numbered = list(enumerate(sample_rows(market, per_market, seed=3), start=1))
        valid, errors = validate_rows(market, numbered, notify_url="https://x.example/hook")
        assert not errors
        payouts += [p for _, p in valid]
    return payouts


def test_settled_orders_leave_no_account_or_phone_number_in_the_database(
    ledger: Ledger, database: str
) -> None:
    payouts = sample_payouts(5)
    numbers = {p.fields[n] for p in payouts for n in PERSONAL_NUMBERS if n in p.fields}
    assert len(numbers) >= 30
    created = ledger.create_orders(payouts, batch_id="b1", market="ID")
    trade_nos = [t for t, _ in created]
    assert numbers_in_the_database(database, numbers) == sorted(numbers)
    settle: list[Callable[[str], object]] = [
        lambda t: ledger.apply_report(t, report(State.SUCCEEDED), source="webhook"),
        lambda t: ledger.apply_report(t, report(State.FAILED, "00029"), source="lookup"),
        lambda t: ledger.transition(t, State.FAILED, source="submit", report=True),
    ]
    for index, trade_no in enumerate(trade_nos):
        if index % 4 == 3:
            ledger.transition(trade_no, State.CANCELLED, source="operator")
            continue
        assert ledger.claim(trade_no)[0].moved
        settle[index % 3](trade_no)
    summary = ledger.batch("b1")
    assert summary is not None and summary.settled
    # FAILED orders keep theirs for a retry, until the retention step erases them; paid and
    # cancelled ones erased theirs as they became final: only the failed ones' numbers stay.
    failed = sorted(t for t in trade_nos if (o := ledger.get(t)) and o.state is State.FAILED)
    kept = rows(database, "SELECT trade_no FROM orders WHERE payload IS NOT NULL ORDER BY 1")
    assert [t for (t,) in kept] == failed and len(failed) == 10
    failed_numbers = {
        p.fields[n]
        for t, p in zip(trade_nos, payouts, strict=True)
        if t in failed
        for n in PERSONAL_NUMBERS
        if n in p.fields
    }
    assert numbers_in_the_database(database, numbers) == sorted(failed_numbers)
    assert retention.erase_expired(ledger, 0) == len(failed)
    assert rows(database, "SELECT count(*) FROM orders WHERE payload IS NOT NULL") == [(0,)]
    assert numbers_in_the_database(database, numbers) == []
    # What people read still works: masked fields, the order, its history.
    order = ledger.get(trade_nos[0])
    assert order is not None and order.masked is not None
    assert order.masked["bankAccountNo"].endswith(payouts[0].fields["bankAccountNo"][-4:])
    assert order.masked["bankAccountNo"].startswith("****")
    assert ledger_reads.history(ledger, trade_nos[0])[-1][1] == "SUCCEEDED webhook"


def test_every_event_and_order_has_its_parent_after_every_kind_of_change(
    ledger: Ledger, database: str
) -> None:
    # The schema has no foreign keys on these (migration 0006): the ledger's statements
    # keep them by construction.
    queued = create(ledger, payout(reference="r1"), payout(reference="r2"), payout(), payout())
    again = create(ledger, payout(reference="r1"), payout(reference="r3"), batch="b2")
    held = create(ledger, payout(), batch="b3", hold=True)
    first, second, third, fourth = queued
    ledger.claim_many([first])
    ledger.transition(second, State.CANCELLED, source="operator")
    ledger.apply_report(first, report(State.SUCCEEDED), source="webhook")
    ledger.apply_report(first, report(State.FAILED, "00029"), source="lookup")  # discrepancy
    ledger.transition_many([third, fourth, *held], State.QUEUED, source="operator")
    ledger.restart_queued([third])
    assert again[0] == first
    orphans = rows(
        database,
        "SELECT (SELECT count(*) FROM order_events e"
        "        WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.trade_no = e.trade_no)),"
        "       (SELECT count(*) FROM orders o"
        "        WHERE NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = o.batch_id)),"
        "       (SELECT count(*) FROM order_events)",
    )
    assert orphans[0][:2] == (0, 0)
    assert orphans[0][2] >= 10


def test_trade_nos_start_with_the_time_and_are_unique() -> None:
    before = time.time_ns() // 1_000_000
    made = [new_trade_no() for _ in range(10_000)]
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", trade_no) for trade_no in made)
    assert len(set(made)) == len(made)
    # The millisecond first: a batch's keys land together in the primary key's index.
    assert all(before <= int(trade_no[:12], 16) <= after for trade_no in made)
