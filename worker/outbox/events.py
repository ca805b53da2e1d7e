"""The events the application sees: which rows of ``order_events`` are events, their
types, and their body (the wire contract of DESIGN.md).

**Which rows are events.** The application sees a payout's state as it matters to it:
sending (SUBMITTING) and not knowing whether the provider got it (UNKNOWN) are steps of
QUEUED, so a retry or an unknown outcome adds no event. An ``order_events`` row is an
event when it changes that state (:func:`public_state`); the rows that record a report
not applied (a discrepancy) or a message republished change none and are not events.
Their types: :class:`EventType`.

**A batch's events** (``batch.held``, ``batch.approved``, ``batch.released``: what it
waits for, who approved it, its release) are rows of its first order's history that
change no state, their facts naming the batch event (worker.ledger.batches): so they
share the feed's cursor, horizon and webhook deliveries with the payouts' events. Their
``data`` is the batch's: id, market, state, and the reason, approver or payouts released.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from psycopg import sql

from worker.core.redact import redact
from worker.core.states import State


class EventType(StrEnum):
    """An event's ``type``: ``payout.`` and the state as the application sees it."""

    HELD = "payout.held"
    QUEUED = "payout.queued"
    PROCESSING = "payout.processing"
    SUCCEEDED = "payout.succeeded"
    FAILED = "payout.failed"
    REVIEW = "payout.review"
    CANCELLED = "payout.cancelled"
    REVERSED = "payout.reversed"
    BATCH_HELD = "batch.held"
    BATCH_APPROVED = "batch.approved"
    BATCH_RELEASED = "batch.released"


# What the application sees of each state: sending, and not knowing whether the provider
# got it, are steps of QUEUED.
_SEEN_AS = {State.SUBMITTING: State.QUEUED, State.UNKNOWN: State.QUEUED}
EVENT_TYPES = {
    state: EventType(f"payout.{state.lower()}") for state in State if state not in _SEEN_AS
}


def public_state(state: State) -> State:
    """The state as the application sees it."""
    return _SEEN_AS.get(state, state)


def seen_sql(column: str) -> sql.Composable:
    """:func:`public_state` in SQL, from the same table."""
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(str(s)), sql.Literal(str(seen)))
        for s, seen in _SEEN_AS.items()
    )
    column_sql = sql.SQL(column)
    return sql.SQL("(CASE {} {} ELSE {} END)").format(column_sql, cases, column_sql)


@dataclass(frozen=True, slots=True)
class Event:
    """One change of a payout's state as the application sees it; no personal data."""

    cursor: int  # order_events.id: pass it as ``after`` to read on from here
    type: EventType
    at: datetime
    state: State
    previous_state: State | None  # None for the payout's creation
    trade_no: str
    reference: str | None
    batch_id: str
    market: str
    currency: str
    amount: Decimal
    source: str  # producer, submit, webhook, lookup, reconcile, operator, sweeper
    platform_trade_no: str | None = None
    provider_status: str | None = None
    provider_message: str | None = None
    reason: str | None = None
    retry_of: str | None = None  # the FAILED or REVERSED payout this one enqueued again
    # A batch's event: its facts (reason, by, payouts); None for a payout's event.
    batch_facts: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """Unique and stable: the same on every delivery of this event."""
        return f"evt_{self.cursor}"

    @property
    def created(self) -> int:
        """Unix seconds."""
        return int(self.at.timestamp())

    def to_dict(self) -> dict[str, Any]:
        """The webhook's body (the wire contract of DESIGN.md)."""
        if self.batch_facts is not None:
            return {
                "id": self.id,
                "type": str(self.type),
                "created": self.created,
                "data": {
                    "batch_id": self.batch_id,
                    "market": self.market,
                    "state": str(self.state),
                    **self.batch_facts,
                },
            }
        return {
            "id": self.id,
            "type": str(self.type),
            "created": self.created,
            "data": {
                "trade_no": self.trade_no,
                "reference": self.reference,
                "batch_id": self.batch_id,
                "market": self.market,
                "currency": self.currency,
                "amount": format(self.amount, "f"),
                "state": str(self.state),
                "previous_state": str(self.previous_state) if self.previous_state else None,
                "platform_trade_no": self.platform_trade_no,
                "provider_status": self.provider_status,
                "provider_message": self.provider_message,
                "reason": self.reason,
                "source": self.source,
                "retry_of": self.retry_of,
            },
        }

    def body(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def event_from_row(row: Sequence[Any]) -> Event:
    (cursor, at, source, seen_from, seen_to, facts, trade_no, reference, batch_id, market,
     currency, amount, retry_of, platform_trade_no) = row  # fmt: skip
    facts = facts or {}

    def text(name: str) -> str | None:
        # Provider text is masked when stored; masked again here, as it leaves the system.
        value = facts.get(name)
        return redact(value) if value not in (None, "") else None

    state = State(seen_to)
    kind = facts.get("batch_event")
    batch_facts = None
    if kind is not None:
        batch_facts = {k: v for k, v in facts.items() if k != "batch_event"}
    return Event(
        cursor=cursor,
        type=EventType(f"batch.{kind}") if kind else EVENT_TYPES[state],
        at=at,
        state=state,
        previous_state=State(seen_from) if seen_from else None,
        trade_no=trade_no,
        reference=reference,
        batch_id=batch_id,
        market=market,
        currency=currency,
        amount=amount,
        source=source,
        platform_trade_no=platform_trade_no,
        provider_status=facts.get("provider_status"),
        provider_message=text("provider_message"),
        reason=text("reason") or text("note"),
        retry_of=retry_of,
        batch_facts=batch_facts,
    )
