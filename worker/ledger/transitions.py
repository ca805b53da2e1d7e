"""The order ledger in PostgreSQL: the system of record for where every payout stands.

Tables (``worker/db/migrations``): ``batches``, ``orders`` (one row per payout, with
its exact fields to send in ``payload`` until it is final (a FAILED one's until the
retention window ends, so it can be retried: worker.retention), and a masked copy for
good) and ``order_events``
(append-only, one row per change). Every change of state is one statement, hence one
transaction and one round trip: lock the orders, update those whose state the
transition table (:data:`worker.states.TRANSITIONS`) lets move, and insert their
event rows. Times come from the server's clock; amounts are ``numeric`` and come back
as ``Decimal``.

Connections come from a :class:`psycopg_pool.ConnectionPool`, each checked out for
one short exchange and put in autocommit (a lone statement is its own transaction:
no extra round trips for BEGIN and COMMIT). None is held while a caller waits on
anything else, such as an HTTP call. Where one commit (one flush to disk) for several
changes pays, one statement makes them: the submit path claims a group of orders and
applies the answers to the group before in one (:meth:`Ledger.claim_many`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain, islice, repeat
from typing import TYPE_CHECKING, Any, Literal

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from worker import idempotency
from worker.confirm import needs_confirmation
from worker.exceptions import AlreadyRetried
from worker.redact import mask_personal
from worker.retry_stop import stop_retries
from worker.states import ALLOWED_FROM, FINAL_STATES, SETTLED_STATES, Outcome, State

if TYPE_CHECKING:
    from schemas import Payout
    from worker.vexora import ProviderReport

log = logging.getLogger(__name__)

# Who made a change, as ``order_events.source`` records it.
Source = Literal["producer", "submit", "webhook", "lookup", "reconcile", "operator", "sweeper"]

# Batch notes and the column that keeps each.
_BATCH_NOTES = {"held": "hold_reason"}
PAGE = 1000  # rows per page of a scan

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_ORDER_COLUMNS = sql.SQL(
    "trade_no, batch_id, market, currency, amount, reference, state, created_at, updated_at, "
    "attempts, platform_trade_no, provider_status, provider_message, reason, discrepancy, "
    "unseen_at, resubmits, row_no, state_entered_at, fee, total_debited, masked, "
    "fee_currency, total_debited_currency, recheck_at, retry_of"
)
# Final orders that may be enqueued again (Producer.retry), while they keep their payload.
RETRYABLE = frozenset({State.FAILED, State.REVERSED})
# Final states whose payload stays for FAILED_PAYLOAD_RETENTION (worker.retention erases it
# after that), so that the order can be retried; SUCCEEDED and CANCELLED erase it in the
# update that makes them final (DESIGN.md: personal data only while it is needed). A
# REVERSED order was SUCCEEDED first, so it has none left to keep (Producer.retry says so);
# only one reversed before migration 0007 may still hold its payload, until the window ends.
PAYLOAD_KEPT = RETRYABLE


def _literals(states: frozenset[State]) -> sql.Composable:
    """States as SQL literals, sorted: a partial index (orders_payload_kept) serves a query
    only when it spells them the same way."""
    return sql.SQL(", ").join(sql.Literal(str(state)) for state in sorted(states))


_KEPT = _literals(PAYLOAD_KEPT)

# One statement per change of state, for one order or many, each its own change
# (``_move_row``): lock the orders (in one order, so two such statements never deadlock),
# decide each one's action from its state, apply it, and record an event for every move
# and every discrepancy. The actions: ``move`` (the table allows it), ``refresh``
# (already there: the provider's facts are stored), ``discrepancy`` (a provider report
# contradicting a final state: recorded on the order and as an event, never applied). A
# row without an action is left alone; the caller names why from its state. A claim
# (a move to SUBMITTING) also returns the fields to send: no second round trip for them.
_MOVE = """
WITH want AS (
    SELECT * FROM jsonb_to_recordset(%(moves)s::jsonb) AS w(
        trade_no text, target text, allowed text[], discrepant text[], refresh boolean,
        attempt boolean, erase boolean, source text, facts jsonb, discrepancy text,
        discrepancy_facts jsonb, platform_trade_no text, provider_status text,
        provider_message text, reason text, resubmits integer, report boolean,
        review_from text[], attempts integer, unposted boolean, unposted_only boolean)
), old AS (
    -- By the primary key (the array, not a join: the index, whatever the estimates).
    SELECT trade_no, state, attempts AS tries, platform_trade_no AS stored_id,
        unposted_claims
    FROM orders WHERE trade_no = ANY(%(trade_nos)s::text[])
    ORDER BY trade_no FOR UPDATE
), act AS (
    SELECT w.*, old.state AS before, old.stored_id, CASE
        -- A report naming another provider id than the stored one (worker.confirm): a
        -- pending order goes to REVIEW, any other records it; the stored id stays.
        WHEN w.report AND w.platform_trade_no <> old.stored_id THEN
            CASE WHEN old.state = ANY(w.review_from) THEN 'review' ELSE 'discrepancy' END
        -- A cancel (unposted_only) moves only an order no POST was ever started for
        -- (every claim given back before its POST), decided on the row as locked, so a
        -- claim cannot slip between.
        WHEN old.state = ANY(w.allowed) AND (w.attempts IS NULL OR old.tries = w.attempts)
            AND (NOT w.unposted_only OR old.tries = old.unposted_claims) THEN 'move'
        WHEN old.state = w.target AND w.refresh THEN 'refresh'
        WHEN old.state = ANY(w.discrepant) THEN 'discrepancy'
    END AS act
    FROM old JOIN want w USING (trade_no)
), changed AS (
    UPDATE orders o SET
        state = CASE WHEN a.act = 'move' THEN a.target
            WHEN a.act = 'review' THEN 'REVIEW' ELSE o.state END,
        updated_at = CASE WHEN a.act IN ('move', 'review') THEN now() ELSE o.updated_at END,
        state_entered_at = CASE WHEN a.act IN ('move', 'review') THEN now()
            ELSE o.state_entered_at END,
        attempts = o.attempts + CASE WHEN a.act = 'move' AND a.attempt THEN 1 ELSE 0 END,
        -- A claim given back before its POST was started (see migration 0009).
        unposted_claims = o.unposted_claims
            + CASE WHEN a.act = 'move' AND a.unposted THEN 1 ELSE 0 END,
        -- A mark left on an earlier POST is no mark.
        unseen_at = CASE WHEN a.act = 'move' AND a.attempt THEN NULL ELSE o.unseen_at END,
        -- Personal data goes in the same update that makes the order final.
        payload = CASE WHEN a.act = 'move' AND a.erase THEN NULL ELSE o.payload END,
        -- The first id the provider gave is kept: a report naming another never gets here.
        platform_trade_no = coalesce(o.platform_trade_no, a.platform_trade_no),
        provider_status = CASE WHEN a.act IN ('discrepancy', 'review') THEN o.provider_status
            ELSE coalesce(a.provider_status, o.provider_status) END,
        provider_message = CASE WHEN a.act IN ('discrepancy', 'review')
            THEN o.provider_message ELSE coalesce(a.provider_message, o.provider_message) END,
        reason = CASE WHEN a.act = 'discrepancy' THEN o.reason
            WHEN a.act = 'review' THEN 'the provider named another payout id: stored '
                || a.stored_id || ', reported ' || a.platform_trade_no
            ELSE coalesce(a.reason, o.reason) END,
        resubmits = CASE WHEN a.act IN ('discrepancy', 'review') THEN o.resubmits
            ELSE coalesce(a.resubmits, o.resubmits) END,
        discrepancy = CASE WHEN a.act IN ('discrepancy', 'review') THEN a.discrepancy
            || CASE WHEN a.platform_trade_no <> a.stored_id
                THEN ' naming platFormTradeNo ' || a.platform_trade_no ELSE '' END
            ELSE o.discrepancy END
    FROM act a
    -- The array again: the primary key's index finds the rows even where the planner's
    -- statistics are stale (a table just filled by a big enqueue, before ANALYZE).
    WHERE o.trade_no = ANY(%(trade_nos)s::text[]) AND o.trade_no = a.trade_no
        AND a.act IS NOT NULL
    RETURNING o.trade_no, a.act, a.before, a.target, a.source, a.facts, a.discrepancy_facts,
        a.stored_id, CASE WHEN a.attempt AND a.act = 'move' THEN o.payload END AS payload
), events AS (
    INSERT INTO order_events (trade_no, source, from_state, to_state, facts)
    SELECT trade_no, source, before,
        CASE WHEN act = 'move' THEN target WHEN act = 'review' THEN 'REVIEW' ELSE before END,
        CASE WHEN act = 'move' THEN facts
            -- Both ids; the order's own stays its platform_trade_no (the feed reads it).
            WHEN facts ->> 'platform_trade_no' <> stored_id THEN discrepancy_facts
                || jsonb_build_object('platform_trade_no', stored_id,
                    'reported_platform_trade_no', facts ->> 'platform_trade_no')
            ELSE discrepancy_facts END
    FROM changed WHERE act <> 'refresh'
)
SELECT a.trade_no, a.before, c.act, c.payload
FROM act a LEFT JOIN changed c USING (trade_no)
"""

# Enqueue: the orders are COPYed straight into ``orders`` as the caller hands them over
# (the server stores each one while the caller validates the next), then one statement
# adds their batch, its totals (summed as they went in) and their creation events. The
# unique reference decides which order a reference maps to, also against a concurrent
# enqueue of the same reference: the COPY waits for that one's outcome and fails if it
# committed (Ledger.create_orders then starts over with that order known). Rows go in as
# they come, in no particular order of references, so two enqueues of overlapping
# references could each wait on the other: enqueues of more than one order take turns
# under this transaction-scoped advisory lock, and so never deadlock.
_ENQUEUE_LOCK = 0x64697362_656E7175  # "disbenqu"
_COPY_ORDERS = (
    "COPY orders (trade_no, batch_id, row_no, market, currency, amount, reference, state, "
    "payload, masked, retry_of) FROM STDIN"
)
_CREATED = """
WITH batch AS (
    INSERT INTO batches (id, market, row_count, idempotency_key, rows_digest)
    VALUES (%(batch)s, %(market)s, %(count)s, %(key)s, %(digest)s)
), totals AS (
    INSERT INTO batch_totals (batch_id, currency, row_count, amount)
    SELECT %(batch)s, currency, row_count, amount
    FROM unnest(%(currencies)s::text[], %(counts)s::integer[], %(amounts)s::numeric[])
        AS t (currency, row_count, amount)
)
INSERT INTO order_events (trade_no, source, to_state, facts)
SELECT trade_no, 'producer', %(state)s,
    CASE WHEN retry_of IS NOT NULL THEN jsonb_build_object('retry_of', retry_of) END
FROM orders WHERE batch_id = %(batch)s
"""
# A page of the orders in one state since before some time, oldest first, after a key
# (entered, tradeNo). The state is spelled as a literal: the partial index orders_open
# serves only such a query.
_PAGE = """
SELECT trade_no, state_entered_at FROM orders
WHERE state = {state} AND state_entered_at < %(before)s
  AND (state_entered_at, trade_no) > (%(after_at)s, %(after)s)
ORDER BY state_entered_at, trade_no
LIMIT %(limit)s
"""

# Open orders per state, and the oldest's entry: served by the partial index orders_open,
# whose predicate it spells (with literals), so it reads work in progress only.
_OPEN_STATES = sql.SQL(
    "SELECT state, count(*), min(state_entered_at) FROM orders "
    "WHERE state NOT IN ({}) GROUP BY state"
).format(sql.SQL(", ").join(sql.Literal(str(state)) for state in sorted(FINAL_STATES)))

# A batch's fees and totals debited per state and currency (each in its own currency).
_COSTS = """
SELECT 'fee', state, fee_currency, sum(fee) FROM orders
WHERE batch_id = %(batch)s AND fee IS NOT NULL GROUP BY state, fee_currency
UNION ALL
SELECT 'debited', state, total_debited_currency, sum(total_debited) FROM orders
WHERE batch_id = %(batch)s AND total_debited IS NOT NULL GROUP BY state, total_debited_currency
"""


def new_trade_no() -> str:
    """32 lowercase hex characters, within the provider's 32-character alphanumeric limit:
    the time in milliseconds (12), then 80 random bits (20). Time first, so that a batch's
    tradeNos fall together at the end of the primary key's index instead of all over it:
    an enqueue writes a few index pages, not one per order."""
    return new_trade_nos(1)[0]


def new_trade_nos(count: int) -> list[str]:
    """``count`` tradeNos (:func:`new_trade_no`) of one millisecond: the random bits of all
    of them drawn at once."""
    now = f"{time.time_ns() // 1_000_000:012x}"
    random = os.urandom(10 * count).hex()
    return [now + random[i : i + 20] for i in range(0, 20 * count, 20)]


def new_batch_id() -> str:
    return "b" + uuid.uuid4().hex[:15]


@dataclass(frozen=True, slots=True)
class Order:
    trade_no: str
    batch_id: str
    market: str
    currency: str
    amount: Decimal
    reference: str | None
    state: State
    created_ms: int
    updated_ms: int
    attempts: int
    platform_trade_no: str | None = None
    provider_status: str | None = None
    provider_message: str | None = None
    reason: str | None = None
    discrepancy: str | None = None
    # When a lookup first showed no record of the payout's latest POST (server ms),
    # and how often it was resubmitted for that: see Lookups._not_found.
    unseen_ms: int | None = None
    resubmits: int = 0
    row_no: int = 0  # the order's row in its batch
    state_entered_ms: int | None = None
    fee: Decimal | None = None  # from the details API
    total_debited: Decimal | None = None  # from the details API
    masked: Mapping[str, str] | None = None  # the fields sent, masked for display
    fee_currency: str | None = None
    total_debited_currency: str | None = None
    # When a failure was reported for this SUCCEEDED order (not by the details API): its
    # reversal waits for the details API's word (Ledger.apply_report).
    recheck_ms: int | None = None
    retry_of: str | None = None  # the FAILED or REVERSED order this one enqueued again


@dataclass(frozen=True, slots=True)
class Debit:
    """What the details API says a payout cost: its fees and the total debited, each
    with its currency (None where the answer does not say)."""

    fee: Decimal | None = None
    fee_currency: str | None = None
    total: Decimal | None = None
    total_currency: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """What a transition found: ``moved`` only when this call changed the state."""

    # ok | same | unexpected | forbidden | final | missing | other_id (a report naming
    # another provider id) | posted (a cancel that would have moved the order, but a POST
    # of it may have reached the provider)
    outcome: str
    previous: State | None

    @property
    def moved(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    total: int
    counts: dict[State, int]
    amounts: dict[State, dict[str, Decimal]]
    discrepancies: int
    created_ms: int
    market: str
    held_reason: str | None = None
    # What the details API says the orders cost, per state and currency.
    fees: dict[State, dict[str, Decimal]] = field(default_factory=dict)
    debited: dict[State, dict[str, Decimal]] = field(default_factory=dict)

    @property
    def settled_count(self) -> int:
        """Orders no longer on their way: final, or in REVIEW."""
        return sum(n for s, n in self.counts.items() if s in SETTLED_STATES)

    @property
    def settled(self) -> bool:
        """True when no order is still on its way (every one final or in REVIEW)."""
        return self.settled_count == self.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "market": self.market,
            "total": self.total,
            "counts": {str(s): n for s, n in self.counts.items()},
            "amounts": _by_state(self.amounts),
            "discrepancies": self.discrepancies,
            "held_reason": self.held_reason,
            "fees": _by_state(self.fees),
            "debited": _by_state(self.debited),
        }


def _by_state(sums: dict[State, dict[str, Decimal]]) -> dict[str, dict[str, str]]:
    return {str(s): {cur: str(v) for cur, v in by_cur.items()} for s, by_cur in sums.items()}


def _currency(code: str | None) -> str | None:
    """A currency code as the ledger keeps it (``IDR``), or None for anything else."""
    code = (code or "").strip().upper()
    return code if len(code) == 3 and code.isascii() and code.isalpha() else None


def _ms(at: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding)."""
    return (at - _EPOCH) // _MS


def _at(ms: int) -> datetime:
    return _EPOCH + ms * _MS


# A row of an enqueue: its number, payout, the order it retries, and its new tradeNo.
_Row = tuple[int, "Payout", str | None, str]


def _trade_nos() -> Iterator[str]:
    """New tradeNos for as long as asked, drawn a thousand at a time."""
    while True:
        yield from new_trade_nos(1000)


def _order(row: Sequence[Any]) -> Order:
    (
        trade_no, batch_id, market, currency, amount, reference, state, created_at,
        updated_at, attempts, platform_trade_no, provider_status, provider_message, reason,
        discrepancy, unseen_at, resubmits, row_no, state_entered_at, fee, total_debited,
        masked, fee_currency, total_debited_currency, recheck_at, retry_of,
    ) = row  # fmt: skip
    return Order(
        trade_no=trade_no,
        batch_id=batch_id,
        market=market,
        currency=currency,
        amount=amount,
        reference=reference,
        state=State(state),
        created_ms=_ms(created_at),
        updated_ms=_ms(updated_at),
        attempts=attempts,
        platform_trade_no=platform_trade_no,
        provider_status=provider_status,
        provider_message=provider_message,
        reason=reason,
        discrepancy=discrepancy,
        unseen_ms=_ms(unseen_at) if unseen_at is not None else None,
        resubmits=resubmits,
        row_no=row_no,
        state_entered_ms=_ms(state_entered_at),
        fee=fee,
        total_debited=total_debited,
        masked=masked,
        fee_currency=fee_currency,
        total_debited_currency=total_debited_currency,
        recheck_ms=_ms(recheck_at) if recheck_at is not None else None,
        retry_of=retry_of,
    )


_QUEUED = frozenset({State.QUEUED})
_SUBMITTING = frozenset({State.SUBMITTING})
_UNSENT = frozenset({State.HELD, State.QUEUED})
_REVIEW = frozenset({State.REVIEW})
_FAILED_FROM = ALLOWED_FROM[State.FAILED]
# The retries of an order, and theirs in turn (each order is retried at most once).
_RETRIES = """
WITH RECURSIVE chain (trade_no, state, depth) AS (
    SELECT trade_no, state, 1 FROM orders WHERE retry_of = %s
    UNION ALL
    SELECT o.trade_no, o.state, c.depth + 1 FROM orders o JOIN chain c ON o.retry_of = c.trade_no
    WHERE c.depth < 100
)
SELECT trade_no, state FROM chain ORDER BY depth
"""


@dataclass(frozen=True, slots=True)
class Move:
    """One order's change of state, as :data:`_MOVE` makes it."""

    trade_no: str
    target: State
    source: Source
    expect: frozenset[State] = frozenset()  # empty: from any state the table allows
    note: str = ""
    # The target is the provider's word: one contradicting a final state is a discrepancy.
    report: bool = False
    # The provider's ids, status and message, a reason, the resubmissions: stored with it.
    facts: Mapping[str, str | int | None] = field(default_factory=dict)
    # Moves only while the order has had this many attempts (None: any): a decision made
    # on the order as read holds only while no new POST was made since.
    attempts: int | None = None
    # A claim given back (SUBMITTING -> QUEUED) before its POST was started.
    unposted: bool = False
    # Move only an order no POST was ever started for (a cancel).
    unposted_only: bool = False


def _move_row(move: Move) -> dict[str, Any]:
    """A Move as one row of :data:`_MOVE`'s ``want``."""
    target = move.target
    expected = move.expect
    allowed = _allowed(move)
    discrepant: frozenset[State] = frozenset()
    if move.report and target in FINAL_STATES:
        discrepant = (FINAL_STATES & expected if expected else FINAL_STATES) - {target}
    given = {name: value for name, value in move.facts.items() if value is not None}
    seen = {**given, "note": move.note} if move.note else given
    return {
        "trade_no": move.trade_no,
        "target": str(target),
        "allowed": [str(s) for s in allowed],
        "discrepant": [str(s) for s in discrepant],
        "refresh": bool(given),
        "attempt": target is State.SUBMITTING,  # a claim: one more attempt
        "erase": target in FINAL_STATES - PAYLOAD_KEPT,
        "source": move.source,
        "facts": seen or None,
        "discrepancy": f"{target} {move.source} {move.note}".rstrip(),
        "discrepancy_facts": {**seen, "discrepancy": str(target)},
        **{name: given.get(name) for name in _STORED_FACTS},
        "report": move.report,
        "review_from": [str(s) for s in _REVIEW_FROM],
        "attempts": move.attempts,
        "unposted": move.unposted,
        "unposted_only": move.unposted_only,
    }


# Where a report naming another provider id sends an order, if it is in one of these.
_REVIEW_FROM = ALLOWED_FROM[State.REVIEW]


# The facts a move stores on the order itself (the rest only go into its event).
_STORED_FACTS = ("platform_trade_no", "provider_status", "provider_message", "reason", "resubmits")


def _report_move(
    trade_no: str, report: ProviderReport, source: Source, *, attempts: int | None = None
) -> Move:
    """The move a provider's report asks for (see :meth:`Ledger.apply_report`)."""
    return Move(
        trade_no,
        report.state,
        source,
        report=True,
        attempts=attempts,
        facts={
            "platform_trade_no": report.platform_trade_no,
            "provider_status": report.status,
            "provider_message": report.message,
        },
    )


def _allowed(move: Move) -> frozenset[State]:
    """The states ``move`` may take an order from."""
    allowed = ALLOWED_FROM[move.target]
    return allowed & move.expect if move.expect else allowed


def _outcome(before: State, target: State, expect: Collection[State]) -> str:
    """Why an order in ``before`` did not move to ``target``."""
    if before is target:
        return "same"
    if expect and before not in expect:
        return "unexpected"
    if before in FINAL_STATES:
        return "final"
    return "forbidden"


class Ledger:
    """Orders, transitions, batch counts and pending scans, in PostgreSQL.

    ``on_final(state, n)`` is told of every ``n`` orders a transition made final in
    ``state`` (the metrics count them: worker.metrics).
    """

    def __init__(
        self, pool: ConnectionPool, *, on_final: Callable[[State, int], None] | None = None
    ) -> None:
        self.pool = pool
        self.on_final = on_final

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            conn.autocommit = True
            yield conn

    # creation ---------------------------------------------------------------
    def create_orders(
        self,
        payouts: Iterable[Payout],
        *,
        batch_id: str,
        market: str,
        hold: bool = False,
        retry_of: Sequence[str] | None = None,
        key: idempotency.BatchKey | None = None,
    ) -> list[tuple[str, bool]]:
        """Persist ``payouts`` as one batch; returns (tradeNo, created) in input order.

        One transaction: the orders (COPYed in), the batch, its totals and the
        creation events are committed together before this returns. A payout whose
        reference already has an order (from an earlier batch, a concurrent one, or
        an earlier row of this one) is not created again: that order's tradeNo comes
        back with ``created=False``.

        ``payouts`` may be a generator: each payout is COPYed as it comes, so the
        server stores one while the caller makes the next. An exception it raises
        rolls the batch back and propagates.

        ``retry_of`` (one tradeNo per payout) makes each a retry of that FAILED or
        REVERSED order, whose payload is erased in the same transaction: an order is
        retried at most once (AlreadyRetried when another retry of it won a race).

        ``key``, an idempotency key: the batch is stored with it, unless it holds a batch
        already (within its window), which raises idempotency.Duplicate naming that batch
        (IdempotencyKeyReused if of other rows) and stores nothing.
        """
        state = State.HELD if hold else State.QUEUED
        links: Iterable[str | None] = retry_of if retry_of is not None else repeat(None)
        numbered = enumerate(zip(payouts, links, strict=retry_of is not None), 1)
        trade_nos = _trade_nos()
        taken: list[_Row] = []  # (row number, payout, retried tradeNo, new tradeNo)

        def take() -> Iterator[_Row]:
            yield from taken  # those a rolled-back attempt took, then the rest
            for row_no, (payout, link) in numbered:
                taken.append((row_no, payout, link, next(trade_nos)))
                yield taken[-1]

        known: dict[str, str] = {}  # reference -> its order, committed by another enqueue
        while True:
            rows = take()
            try:
                self._create(
                    rows,
                    known,
                    batch_id=batch_id,
                    market=market,
                    state=state,
                    retry_of=retry_of,
                    key=key,
                )
                break
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name == "orders_retry_of_key":
                    raise AlreadyRetried from None
                if exc.diag.constraint_name != "orders_reference_key":
                    raise
                # Rolled back: another enqueue committed one of these references since.
                for _ in rows:  # take the rest too, to look them all up at once
                    pass
                references = [row[1].reference for row in taken if row[1].reference is not None]
                found = self._orders_by_reference(references)
                if found.keys() <= known.keys():
                    raise  # no order committed since the last attempt: nothing to retry for
                known = found
        result: list[tuple[str, bool]] = []
        made: dict[str, str] = {}  # reference -> the order its first row made
        for _, payout, _, trade_no in taken:
            reference = payout.reference
            if reference is None:
                result.append((trade_no, True))
            elif reference in known:
                result.append((known[reference], False))
            elif reference in made:
                result.append((made[reference], False))
            else:
                made[reference] = trade_no
                result.append((trade_no, True))
        return result

    def _create(
        self,
        rows: Iterator[_Row],
        known: Collection[str],
        *,
        batch_id: str,
        market: str,
        state: State,
        retry_of: Sequence[str] | None,
        key: idempotency.BatchKey | None,
    ) -> None:
        """One transaction: ``rows`` as orders (but those of a ``known`` reference or of a
        reference an earlier row has), the batch, its totals and the creation events."""
        first = list(islice(rows, 2))
        made: set[str] = set()  # the references of the orders made
        counts: dict[str, int] = {}  # currency -> orders made
        amounts: dict[str, Decimal] = {}  # currency -> their sum
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            if len(first) > 1 or key is not None:
                # Orders of several references, taken one at a time as they come, could
                # wait on another enqueue's in the opposite order: enqueues of more than
                # one order take turns. (One of a single order holds nothing another
                # waits for while it waits.) A key is looked up and stored in one turn:
                # two enqueues with one key make one batch. A turn may come after another
                # batch's whole COPY: wait for it as long as a statement may last, not the
                # lock_timeout.
                cur.execute(
                    "SELECT set_config('lock_timeout', current_setting('statement_timeout'), true)"
                )
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ENQUEUE_LOCK,))
            if key is not None:
                idempotency.claim(conn, market, key)
            with cur.copy(_COPY_ORDERS) as copy:
                for row_no, payout, link, trade_no in chain(first, rows):
                    reference = payout.reference
                    if reference is not None:
                        if reference in known or reference in made:
                            continue
                        made.add(reference)
                    currency = payout.currency
                    counts[currency] = counts.get(currency, 0) + 1
                    amounts[currency] = amounts.get(currency, Decimal(0)) + payout.amount
                    copy.write_row(
                        (
                            trade_no,
                            batch_id,
                            row_no,
                            payout.market,
                            currency,
                            payout.amount,
                            reference,
                            str(state),
                            orjson.dumps(payout.fields).decode(),
                            orjson.dumps(mask_personal(payout.fields)).decode(),
                            link,
                        )
                    )
            cur.execute(
                _CREATED,
                {
                    "batch": batch_id,
                    "market": market,
                    "state": str(state),
                    "count": sum(counts.values()),
                    "key": key.key if key is not None else None,
                    "digest": key.digest if key is not None else None,
                    "currencies": list(counts),
                    "counts": list(counts.values()),
                    "amounts": list(amounts.values()),
                },
            )
            if retry_of is not None:
                cur.execute(
                    "UPDATE orders SET payload = NULL WHERE trade_no = ANY(%s)", (list(retry_of),)
                )

    def _orders_by_reference(self, references: list[str]) -> dict[str, str]:
        with self._connection() as conn:
            found = conn.execute(
                "SELECT reference, trade_no FROM orders WHERE reference = ANY(%s)", (references,)
            ).fetchall()
        return dict(found)

    def keyed_batch(self, market: str, key: idempotency.BatchKey) -> idempotency.KeyedBatch | None:
        """The batch holding the idempotency ``key`` in ``market`` within its window."""
        with self._connection() as conn:
            return idempotency.find(conn, market, key)

    # reading ----------------------------------------------------------------
    def get(self, trade_no: str) -> Order | None:
        query = sql.SQL("SELECT {} FROM orders WHERE trade_no = %s").format(_ORDER_COLUMNS)
        with self._connection() as conn:
            row = conn.execute(query, (trade_no,)).fetchone()
        return _order(row) if row is not None else None

    def get_many(self, trade_nos: Sequence[str]) -> list[Order | None]:
        """The orders of ``trade_nos`` in that order (None for an unknown tradeNo)."""
        query = sql.SQL("SELECT {} FROM orders WHERE trade_no = ANY(%s)").format(_ORDER_COLUMNS)
        with self._connection() as conn:
            found = {row[0]: _order(row) for row in conn.execute(query, (list(trade_nos),))}
        return [found.get(trade_no) for trade_no in trade_nos]

    def payload(self, trade_no: str) -> dict[str, str]:
        """The exact fields to send for this order (without tradeNo, timestamp, sign).

        KeyError when there is no such order, or it is final and its fields are erased.
        """
        with self._connection() as conn:
            row = conn.execute(
                "SELECT payload FROM orders WHERE trade_no = %s", (trade_no,)
            ).fetchone()
        if row is None or row[0] is None:
            raise KeyError(trade_no)
        return dict(row[0])

    def history(self, trade_no: str) -> list[tuple[int, str]]:
        """The order's events, oldest first: (ms, "STATE source note") or, for a report
        recorded but not applied, (ms, "DISCREPANCY <reported state> source note")."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT at, to_state, source, facts ->> 'discrepancy', facts ->> 'note' "
                "FROM order_events WHERE trade_no = %s ORDER BY id",
                (trade_no,),
            ).fetchall()
        return [
            (
                _ms(at),
                " ".join(
                    part
                    for part in (
                        f"DISCREPANCY {reported}" if reported else to_state,
                        source,
                        note,
                    )
                    if part
                ),
            )
            for at, to_state, source, reported, note in rows
        ]

    def trade_no_for(self, reference: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT trade_no FROM orders WHERE reference = %s", (reference,)
            ).fetchone()
        return row[0] if row is not None else None

    def batch(self, batch_id: str) -> BatchSummary | None:
        """The batch's counts and amounts per state and currency, and its discrepancies
        (reports recorded but not applied), counted from its orders as they are now."""
        with self._connection() as conn:
            head = conn.execute(
                "SELECT b.row_count, b.created_at, b.market, b.hold_reason, "
                "  (SELECT count(*) FROM order_events e JOIN orders o USING (trade_no) "
                "   WHERE e.facts ? 'discrepancy' AND o.batch_id = b.id) "
                "FROM batches b WHERE b.id = %s",
                (batch_id,),
            ).fetchone()
            if head is None:
                return None
            rows = conn.execute(
                "SELECT state, currency, count(*), sum(amount) FROM orders "
                "WHERE batch_id = %s GROUP BY state, currency",
                (batch_id,),
            ).fetchall()
            costs = conn.execute(_COSTS, {"batch": batch_id}).fetchall()
        total, created_at, market, held_reason, discrepancies = head
        counts: dict[State, int] = {}
        amounts: dict[State, dict[str, Decimal]] = {}
        for state, currency, n, amount in rows:
            counts[State(state)] = counts.get(State(state), 0) + n
            amounts.setdefault(State(state), {})[currency] = amount
        fees: dict[State, dict[str, Decimal]] = {}
        debited: dict[State, dict[str, Decimal]] = {}
        for kind, state, currency, amount in costs:
            sums = fees if kind == "fee" else debited
            sums.setdefault(State(state), {})[currency] = amount
        return BatchSummary(
            batch_id=batch_id,
            total=total,
            counts=counts,
            amounts=amounts,
            discrepancies=discrepancies,
            created_ms=_ms(created_at),
            market=market,
            held_reason=held_reason,
            fees=fees,
            debited=debited,
        )

    def set_batch_note(self, batch_id: str, name: str, value: str | None) -> None:
        """Store (or with None clear) a note on the batch: ``held``, why it is still held."""
        if name not in _BATCH_NOTES:
            raise ValueError(f"unknown batch note {name!r}: expected one of {sorted(_BATCH_NOTES)}")
        query = sql.SQL("UPDATE batches SET {} = %s WHERE id = %s").format(
            sql.Identifier(_BATCH_NOTES[name])
        )
        with self._connection() as conn:
            conn.execute(query, (value, batch_id))

    def iter_batch(self, batch_id: str, page: int = PAGE) -> Iterator[list[str]]:
        """The batch's tradeNos in row order, a page (one short query) at a time."""
        after = 0
        while True:
            with self._connection() as conn:
                rows = conn.execute(
                    "SELECT row_no, trade_no FROM orders WHERE batch_id = %s AND row_no > %s "
                    "ORDER BY row_no LIMIT %s",
                    (batch_id, after, page),
                ).fetchall()
            if not rows:
                return
            yield [trade_no for _, trade_no in rows]
            after = rows[-1][0]

    def now_ms(self) -> int:
        """The database server's clock, which times every state (never the worker's)."""
        with self._connection() as conn:
            row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        return _ms(row[0])

    def scan(self, state: State, *, older_than: float, now_ms: int) -> Iterator[tuple[str, int]]:
        """Every (tradeNo, entered ms) in ``state`` for ``older_than`` s at ``now_ms``,
        oldest first, read in pages by key: an order that leaves the state while it is
        read makes the scan skip no other, and one entering it now is too young."""
        cutoff = now_ms - int(older_than * 1000)
        after: tuple[str, datetime] | None = None
        while True:
            page = self._page(state, cutoff, after, PAGE)
            yield from ((trade_no, _ms(at)) for trade_no, at in page)
            if len(page) < PAGE:
                return
            after = page[-1]

    def _page(
        self,
        state: State,
        cutoff_ms: int,
        after: tuple[str, datetime] | None,
        limit: int,
    ) -> list[tuple[str, datetime]]:
        query = sql.SQL(_PAGE).format(state=sql.Literal(str(state)))
        params = {
            # Entered at most at cutoff_ms, in whole milliseconds as the callers count.
            "before": _at(cutoff_ms + 1),
            "after": after[0] if after else "",
            "after_at": after[1] if after else _EPOCH,
            "limit": limit,
        }
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def entered_ms(self, trade_no: str, state: State) -> int | None:
        """When the order entered ``state`` (if it is in that state now)."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT state_entered_at FROM orders WHERE trade_no = %s AND state = %s",
                (trade_no, str(state)),
            ).fetchone()
        return _ms(row[0]) if row is not None else None

    def stale_claim(self, trade_no: str, lease: float) -> bool:
        """True when the order is SUBMITTING and was claimed more than ``lease`` s ago:
        its worker is certainly gone (killed at its time limit, if not before)."""
        claimed = self.entered_ms(trade_no, State.SUBMITTING)
        if claimed is None:
            return False
        return self.now_ms() - claimed > lease * 1000

    def retries_of(self, trade_no: str) -> list[tuple[str, State]]:
        """The order's retry, the retry of that, ...: (tradeNo, state), in that order."""
        with self._connection() as conn:
            rows = conn.execute(_RETRIES, (trade_no,)).fetchall()
        return [(retry, State(state)) for retry, state in rows]

    def last_claimed_ms(self, trade_no: str) -> int | None:
        """When the order was last claimed for sending (its last POST, if any), or None."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT max(at) FROM order_events WHERE trade_no = %s AND to_state = 'SUBMITTING'",
                (trade_no,),
            ).fetchone()
        return _ms(row[0]) if row is not None and row[0] is not None else None

    def first_claimed_ms(self, trade_no: str) -> int | None:
        """When the order was first claimed for sending (None if never), from its events."""
        return self.earliest_claim_ms([trade_no])

    def earliest_claim_ms(self, trade_nos: Sequence[str]) -> int | None:
        """When the first of the orders was first claimed for sending, so before the
        provider saw any of them (None if none ever was), from their events."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT min(at) FROM order_events "
                "WHERE trade_no = ANY(%s::text[]) AND to_state = 'SUBMITTING'",
                (list(trade_nos),),
            ).fetchone()
        return _ms(row[0]) if row is not None and row[0] is not None else None

    def open_states(self) -> dict[State, tuple[int, int]]:
        """For every state orders are open in (not final): how many, and when the oldest
        entered it (ms). One query on the index of open orders, however many are final."""
        with self._connection() as conn:
            rows = conn.execute(_OPEN_STATES).fetchall()
        return {State(state): (n, _ms(oldest)) for state, n, oldest in rows}

    def state_counts(self) -> dict[State, int]:
        """Orders per state across every batch: a count over the whole table, for tools
        and tests (the metrics read :meth:`open_states` and count the finals as they go)."""
        with self._connection() as conn:
            rows = conn.execute("SELECT state, count(*) FROM orders GROUP BY state").fetchall()
        return {State(state): n for state, n in rows}

    def count(self, state: State) -> int:
        """Orders in ``state``: an index read for an open state (spelled as a literal)."""
        query = sql.SQL("SELECT count(*) FROM orders WHERE state = {}").format(
            sql.Literal(str(state))
        )
        with self._connection() as conn:
            row = conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])

    def discrepancies(self, limit: int = 100) -> list[str]:
        """Orders with a report recorded but not applied, the latest first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT trade_no FROM order_events WHERE facts ? 'discrepancy' "
                "GROUP BY trade_no ORDER BY max(id) DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [trade_no for (trade_no,) in rows]

    def ping(self) -> None:
        """One round trip to the server; raises ``psycopg.OperationalError`` (a
        ``PoolTimeout`` too) when it cannot be reached."""
        with self._connection() as conn:
            conn.execute("SELECT 1")

    # transitions ------------------------------------------------------------
    def _move(self, moves: Sequence[Move]) -> dict[str, tuple[Transition, dict[str, str] | None]]:
        """One statement making ``moves`` (of distinct orders): each one's Transition and,
        for a claim that moved, the order's fields to send, keyed by tradeNo; unknown
        tradeNos are absent."""
        trade_nos = [move.trade_no for move in moves]
        if len(set(trade_nos)) != len(trade_nos):
            raise ValueError("one statement moves each order at most once")
        params = {
            "moves": orjson.dumps([_move_row(move) for move in moves]).decode(),
            "trade_nos": trade_nos,
        }
        with self._connection() as conn:
            rows = conn.execute(_MOVE, params).fetchall()
        wanted = {move.trade_no: move for move in moves}
        result: dict[str, tuple[Transition, dict[str, str] | None]] = {}
        made_final: dict[State, int] = {}
        for trade_no, before, act, payload in rows:
            move = wanted[trade_no]
            previous = State(before)
            if act == "move":
                result[trade_no] = (Transition("ok", previous), payload)
                if move.target in FINAL_STATES:
                    made_final[move.target] = made_final.get(move.target, 0) + 1
            elif act == "discrepancy" and previous in FINAL_STATES:
                result[trade_no] = (Transition("final", previous), None)
            elif act in ("review", "discrepancy"):
                # The report named another provider id (see _MOVE): REVIEW, or recorded.
                result[trade_no] = (Transition("other_id", previous), None)
            else:
                outcome = _outcome(previous, move.target, move.expect)
                if move.unposted_only and previous in _allowed(move):
                    outcome = "posted"  # it could move, but a POST of it may have arrived
                result[trade_no] = (Transition(outcome, previous), None)
        if self.on_final is not None:
            for state, count in made_final.items():
                self.on_final(state, count)
        return result

    def transition(
        self,
        trade_no: str,
        target: State,
        *,
        source: Source,
        expect: Iterable[State] = (),
        note: str = "",
        report: bool = False,
        platform_trade_no: str | None = None,
        provider_status: str | None = None,
        provider_message: str | None = None,
        reason: str | None = None,
        resubmits: int | None = None,
        attempts: int | None = None,
    ) -> Transition:
        """Move the order to ``target`` if the table allows it (and it is in ``expect``),
        and, with ``attempts``, only while it has had that many.

        Outcomes: ok, same (already there: the
        facts given are stored), unexpected (not in ``expect``), final (the order is
        final and stays so), forbidden (the table disallows it), missing.
        ``report=True`` says the target comes from the provider: if the order is
        already final in another state, that is recorded as a discrepancy (on the
        order and as an event) and nothing else changes. The provider's ids, status
        code and message, a reason, and the number of resubmissions because the
        provider had no record are stored with the move.
        """
        move = Move(
            trade_no,
            target,
            source,
            expect=frozenset(expect),
            note=note,
            report=report,
            attempts=attempts,
            facts={
                "platform_trade_no": platform_trade_no,
                "provider_status": provider_status,
                "provider_message": provider_message,
                "reason": reason,
                "resubmits": resubmits,
            },
        )
        return self._moved(move.trade_no, self._move([move]))

    def transition_many(
        self,
        trade_nos: Sequence[str],
        target: State,
        *,
        source: Source,
        expect: Iterable[State] = (),
        note: str = "",
    ) -> list[Transition]:
        """The same move for many orders, each atomic, all in one statement."""
        expected = frozenset(expect)
        found = self._move([Move(t, target, source, expect=expected, note=note) for t in trade_nos])
        return [self._moved(t, found) for t in trade_nos]

    def give_back(self, trade_nos: Sequence[str], *, why: str, posted: bool) -> list[Transition]:
        """Claims given back: SUBMITTING -> QUEUED. ``posted=False`` says this claim's POST
        was never started (paused, out of time): the order may still be cancelled."""
        moves = [
            Move(t, State.QUEUED, "submit", expect=_SUBMITTING, note=why, unposted=not posted)
            for t in trade_nos
        ]
        found = self._move(moves)
        return [self._moved(t, found) for t in trade_nos]

    def cancel_unposted(self, trade_nos: Sequence[str], *, note: str) -> list[Transition]:
        """HELD or QUEUED -> CANCELLED (source ``operator``) for each order no POST was ever
        started for; one that may have reached the provider stays, its outcome ``posted``."""
        moves = [
            Move(t, State.CANCELLED, "operator", expect=_UNSENT, note=note, unposted_only=True)
            for t in trade_nos
        ]
        found = self._move(moves)
        return [self._moved(t, found) for t in trade_nos]

    @staticmethod
    def _moved(
        trade_no: str, found: Mapping[str, tuple[Transition, dict[str, str] | None]]
    ) -> Transition:
        return found[trade_no][0] if trade_no in found else Transition("missing", None)

    def claim(self, trade_no: str) -> tuple[Transition, dict[str, str] | None]:
        """QUEUED -> SUBMITTING (one more attempt) and the fields to send, in one round
        trip; the fields are None unless this call claimed the order."""
        return self.claim_many([trade_no])[0]

    def claim_many(
        self, trade_nos: Sequence[str], *, answers: Sequence[tuple[str, ProviderReport]] = ()
    ) -> list[tuple[Transition, dict[str, str] | None]]:
        """:meth:`claim` for each of ``trade_nos`` (in that order), and the provider's
        ``answers`` to earlier POSTs (other orders) applied as :meth:`apply_report` does
        for source ``submit``: all in one statement, so one transaction and one commit for
        a group of payouts."""
        # A failure may need the provider's confirmation (worker.confirm), which reads the
        # order first: applied one by one, as apply_report does (they are few).
        failures = [(t, report) for t, report in answers if report.state is State.FAILED]
        answers = [(t, report) for t, report in answers if report.state is not State.FAILED]
        reported = [_report_move(trade_no, report, "submit") for trade_no, report in answers]
        claims = [Move(t, State.SUBMITTING, "submit", expect=_QUEUED) for t in trade_nos]
        found = self._move(reported + claims)
        for trade_no, report in answers:
            self._after_report(
                trade_no, report, self._moved(trade_no, found), debit=None, source="submit"
            )
        for trade_no, report in failures:
            self.apply_report(trade_no, report, source="submit")
        result: list[tuple[Transition, dict[str, str] | None]] = []
        for trade_no in trade_nos:
            claimed = self._moved(trade_no, found)
            payload = found[trade_no][1] if claimed.moved else None
            result.append((claimed, dict(payload) if payload is not None else None))
        return result

    def note_unseen(self, order: Order, at_ms: int) -> None:
        """Note that a lookup at ``at_ms`` showed no record of ``order``'s latest POST.

        Stored only while the order is in the state it was read in and no later POST
        was made (the next claim clears it); see :attr:`Order.unseen_ms`.
        """
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET unseen_at = %s "
                "WHERE trade_no = %s AND state = %s AND attempts = %s",
                (_at(at_ms), order.trade_no, str(order.state), order.attempts),
            )

    def restart_queued(self, trade_nos: Sequence[str]) -> list[str]:
        """Restart the QUEUED clock of orders whose message the sweeper publishes again,
        so the next pass does not republish them; returns those still QUEUED."""
        with self._connection() as conn:
            rows = conn.execute(
                "WITH swept AS ("
                "  UPDATE orders SET state_entered_at = now() "
                "  WHERE trade_no = ANY(%s) AND state = 'QUEUED' RETURNING trade_no"
                ") INSERT INTO order_events (trade_no, source, from_state, to_state, facts) "
                "SELECT trade_no, 'sweeper', 'QUEUED', 'QUEUED', %s FROM swept "
                "RETURNING trade_no",
                (list(trade_nos), Jsonb({"note": "republished"})),
            ).fetchall()
        return [trade_no for (trade_no,) in rows]

    def apply_report(
        self,
        trade_no: str,
        report: ProviderReport,
        *,
        source: Source,
        debit: Debit | None = None,
        confirmed: bool = False,
    ) -> Outcome:
        """Apply what the provider said about an order: the one rule for every source.

        ``source`` (submit, webhook, lookup) goes into the order's history. The report
        moves the order when the transition table allows it; a report of a final state
        that contradicts the order's own final state is recorded as a discrepancy and
        never applied; anything else (a late PROCESSING, a report for an unsent order)
        changes nothing.

        ``debit`` comes with the details API's answer, and only with it: what the payout
        cost is recorded, and the details API alone may reverse a payout. Its report of
        a failure moves a SUCCEEDED order to REVERSED. The same report from anyone else
        (a webhook, a query or submit answer: a mistaken or forged one must not move
        money state) is recorded as a discrepancy, and the order is marked for the
        reconcile pass to ask the details API (:meth:`rechecks`).

        A failure that may be the provider refusing a repeat
        (:func:`worker.confirm.needs_confirmation`) is recorded in the order's history and
        not applied, unless ``confirmed`` (both of the provider's APIs said so: a lookup):
        the order stays pending (SUBMITTING becomes UNKNOWN) for a lookup to confirm it
        (UNCONFIRMED). A report naming another provider id than the stored one sends a
        pending order to REVIEW with both ids, the stored one kept (OTHER_ID). A success
        reported for a FAILED order stops its retry (worker.retry_stop).
        """
        if debit is not None:
            self._record_debit(trade_no, debit)
            if report.state is State.FAILED:
                reversal = self.transition(
                    trade_no,
                    State.REVERSED,
                    source=source,
                    expect=[State.SUCCEEDED],
                    platform_trade_no=report.platform_trade_no,
                    provider_status=report.status,
                    provider_message=report.message,
                    reason="the details API says it failed after success",
                )
                if reversal.outcome in ("ok", "same"):
                    return Outcome.MOVED if reversal.moved else Outcome.SAME
        if report.state is State.FAILED and not confirmed:
            return self._apply_failure(trade_no, report, source, debit)
        result = self._moved(trade_no, self._move([_report_move(trade_no, report, source)]))
        return self._after_report(trade_no, report, result, debit=debit, source=source)

    def _apply_failure(
        self, trade_no: str, report: ProviderReport, source: Source, debit: Debit | None
    ) -> Outcome:
        """A FAILED report not yet confirmed: final only if the policy says its word is
        enough for the order as read, and no POST was made since (else read again)."""
        result = Transition("missing", None)
        for _ in range(3):
            order = self.get(trade_no)
            if order is None:
                return Outcome.MISSING
            stored = order.platform_trade_no
            other_id = bool(stored and report.platform_trade_no not in (None, stored))
            pending = order.state not in FINAL_STATES
            if pending and not other_id and needs_confirmation(report, order):
                return self._unconfirmed(order, report, source)
            move = _report_move(trade_no, report, source, attempts=order.attempts)
            result = self._moved(trade_no, self._move([move]))
            raced = result.outcome == "forbidden" and result.previous in _FAILED_FROM
            if not raced:
                break
        return self._after_report(trade_no, report, result, debit=debit, source=source)

    def _unconfirmed(self, order: Order, report: ProviderReport, source: Source) -> Outcome:
        """Record a failure the provider must confirm: in the order's history, never as
        its state. A SUBMITTING order becomes UNKNOWN (sent, outcome not known), which the
        reconcile pass looks up; the others stay as they are, pending."""
        facts: dict[str, str | int | None] = {
            "unconfirmed": str(report.state),
            "reported_status": report.status,
            "reported_message": report.message or None,
            "platform_trade_no": report.platform_trade_no,
        }
        note = f"{report.state} to be confirmed with the provider"
        log.warning(
            "%s reports %s for an order that may have been sent more than once: "
            "not final until the provider's APIs confirm it",
            source,
            report.state,
            extra={"trade_no": order.trade_no},
        )
        if order.state is State.SUBMITTING:
            move = Move(
                order.trade_no,
                State.UNKNOWN,
                source,
                expect=frozenset({State.SUBMITTING}),
                note=note,
                attempts=order.attempts,
                facts=facts,
            )
            if self._moved(order.trade_no, self._move([move])).moved:
                return Outcome.UNCONFIRMED
            order = self.get(order.trade_no) or order
        given = {name: value for name, value in facts.items() if value is not None}
        with self._connection() as conn:
            conn.execute(
                "WITH noted AS ("
                "  UPDATE orders SET platform_trade_no = coalesce(platform_trade_no, %(ptn)s) "
                "  WHERE trade_no = %(t)s AND state = %(state)s RETURNING trade_no, state"
                ") INSERT INTO order_events (trade_no, source, from_state, to_state, facts) "
                "SELECT trade_no, %(source)s, state, state, %(facts)s FROM noted",
                {
                    "t": order.trade_no,
                    "state": str(order.state),
                    "ptn": report.platform_trade_no,
                    "source": source,
                    "facts": Jsonb({**given, "note": note}),
                },
            )
        return Outcome.UNCONFIRMED

    def _after_report(
        self,
        trade_no: str,
        report: ProviderReport,
        result: Transition,
        *,
        debit: Debit | None,
        source: Source,
    ) -> Outcome:
        """What applying ``report`` did; a failure reported for a SUCCEEDED order by anyone
        but the details API marks the order for the details API's word."""
        if (
            result.outcome == "final"
            and result.previous is State.SUCCEEDED
            and report.state is State.FAILED
            and debit is None
        ):
            self._mark_recheck(trade_no)
        if (
            result.outcome == "final"
            and result.previous is State.FAILED
            and report.state is State.SUCCEEDED
        ):
            stop_retries(self, trade_no, source)
        match result.outcome:
            case "ok":
                return Outcome.MOVED
            case "other_id":
                log.error(
                    "the provider names another payout id (%s) than the one stored: %s",
                    report.platform_trade_no,
                    "REVIEW" if result.previous in _REVIEW_FROM else "recorded",
                    extra={"trade_no": trade_no},
                )
                return Outcome.OTHER_ID
            case "same":
                return Outcome.SAME
            case "missing":
                return Outcome.MISSING
            case "final" if report.state in FINAL_STATES:
                return Outcome.DISCREPANCY
            case _:
                return Outcome.IGNORED

    def _record_debit(self, trade_no: str, debit: Debit) -> None:
        """Store what the details API says the payout cost: each amount with its currency
        (three capitals, as the orders' own), or not at all."""
        fee_currency = _currency(debit.fee_currency) if debit.fee is not None else None
        total_currency = _currency(debit.total_currency) if debit.total is not None else None
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET fee = coalesce(%s, fee), fee_currency = coalesce(%s, "
                "fee_currency), total_debited = coalesce(%s, total_debited), "
                "total_debited_currency = coalesce(%s, total_debited_currency) "
                "WHERE trade_no = %s",
                (
                    debit.fee if fee_currency else None,
                    fee_currency,
                    debit.total if total_currency else None,
                    total_currency,
                    trade_no,
                ),
            )

    def _mark_recheck(self, trade_no: str) -> None:
        """A failure was reported for this SUCCEEDED order: ask the details API (again)."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET recheck_at = date_trunc('milliseconds', now()) "
                "WHERE trade_no = %s AND state = 'SUCCEEDED'",
                (trade_no,),
            )

    def rechecks(self, limit: int = PAGE) -> list[tuple[str, int]]:
        """SUCCEEDED orders a failure was reported for, to ask the details API about:
        (tradeNo, when marked in ms), the earliest first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT trade_no, recheck_at FROM orders "
                "WHERE recheck_at IS NOT NULL AND state = 'SUCCEEDED' "
                "ORDER BY recheck_at, trade_no LIMIT %s",
                (limit,),
            ).fetchall()
        return [(trade_no, _ms(at)) for trade_no, at in rows]

    def recheck_done(self, trade_no: str, marked_ms: int) -> None:
        """The details API was asked about the order after it was marked at ``marked_ms``:
        that mark (and any earlier) is cleared; a failure reported since keeps it."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET recheck_at = NULL WHERE trade_no = %s AND recheck_at <= %s",
                (trade_no, _at(marked_ms)),
            )

    # REVIEW decisions, retries, retention (issue 14) ------------------------
    def decide(
        self,
        trade_no: str,
        decision: State,
        *,
        operator: str,
        note: str,
        report: ProviderReport | None,
        debit: Debit | None = None,
    ) -> Transition:
        """REVIEW -> ``decision`` by a person (source ``operator``): the operator's name and
        note go into the event, the provider's answer (None: it has no record) onto the
        order and into the event, with what the payout cost (``debit``, from the details
        API) as every report's."""
        if debit is not None:
            self._record_debit(trade_no, debit)
        facts: dict[str, str | int | None] = {"operator": operator}
        if report is not None:
            facts.update(
                platform_trade_no=report.platform_trade_no,
                provider_status=report.status,
                provider_message=report.message,
            )
        move = Move(trade_no, decision, "operator", expect=_REVIEW, note=note, facts=facts)
        return self._moved(trade_no, self._move([move]))

    def retry_candidates(
        self, batch_id: str
    ) -> list[tuple[Order, dict[str, str] | None, str | None]]:
        """The batch's FAILED and REVERSED orders in row order, each with its payload (None
        once erased) and the tradeNo of its retry (None while it has none)."""
        query = sql.SQL(
            "SELECT {}, payload, "
            "  (SELECT r.trade_no FROM orders r WHERE r.retry_of = o.trade_no) "
            "FROM orders o WHERE batch_id = %s AND state IN ({}) ORDER BY row_no"
        ).format(_ORDER_COLUMNS, _literals(RETRYABLE))
        with self._connection() as conn:
            rows = conn.execute(query, (batch_id,)).fetchall()
        return [(_order(row[:-2]), row[-2], row[-1]) for row in rows]

    def erase_kept_payloads(self, older_than: float, *, limit: int = PAGE) -> int:
        """Erase the payload of at most ``limit`` orders in a PAYLOAD_KEPT state for more
        than ``older_than`` seconds (the server's clock), oldest first; returns how many.

        Rows another transaction holds (a retry reading them) are left to a later call.
        """
        with self._connection() as conn:
            query = sql.SQL(
                "UPDATE orders SET payload = NULL WHERE trade_no IN ("
                "  SELECT trade_no FROM orders WHERE payload IS NOT NULL AND state IN ({})"
                "    AND state_entered_at < now() - make_interval(secs => %s)"
                "  ORDER BY state_entered_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            ).format(_KEPT)
            cur = conn.execute(query, (older_than, limit))
            return cur.rowcount

    # listing batches --------------------------------------------------------
    def batches(
        self,
        *,
        since_ms: int | None = None,
        state: Literal["held", "open", "settled"] | None = None,
        limit: int = 20,
    ) -> list[BatchSummary]:
        """The newest batches (created at or after ``since_ms``), at most ``limit``, each
        as :meth:`batch` reads it. ``state`` keeps those with a HELD order (``held``),
        with an order still on its way (``open``), or with none (``settled``)."""
        settled = sql.SQL(", ").join(sql.Literal(str(s)) for s in sorted(SETTLED_STATES))
        having = {
            None: sql.SQL("true"),
            "held": sql.SQL("EXISTS (SELECT 1 FROM orders o WHERE o.batch_id = b.id "
                            "AND o.state = 'HELD')"),
            "open": sql.SQL("EXISTS (SELECT 1 FROM orders o WHERE o.batch_id = b.id "
                            "AND o.state NOT IN ({}, 'HELD'))").format(settled),
            "settled": sql.SQL("NOT EXISTS (SELECT 1 FROM orders o WHERE o.batch_id = b.id "
                               "AND o.state NOT IN ({}))").format(settled),
        }[state]  # fmt: skip
        query = sql.SQL(
            "SELECT b.id FROM batches b WHERE b.created_at >= %s AND {} "
            "ORDER BY b.created_at DESC, b.id LIMIT %s"
        ).format(having)
        with self._connection() as conn:
            ids = [row[0] for row in conn.execute(query, (_at(since_ms or 0), limit))]
        # One read per batch, the same as ``batch``: a listing is a page of a few.
        found = (self.batch(batch_id) for batch_id in ids)
        return [summary for summary in found if summary is not None]
