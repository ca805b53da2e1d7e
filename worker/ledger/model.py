"""The ledger's row types and values: an order as read, a batch's summary, what a
transition found, what a payout cost; new tradeNos and batch ids; times in milliseconds."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from worker.core.states import SETTLED_STATES, State

# Who made a change, as ``order_events.source`` records it.
Source = Literal["producer", "submit", "webhook", "lookup", "reconcile", "operator", "sweeper"]

PAGE = 1000  # rows per page of a scan

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Final orders that may be enqueued again (Producer.retry), while they keep their payload.
RETRYABLE = frozenset({State.FAILED, State.REVERSED})
# Final states whose payload stays for FAILED_PAYLOAD_RETENTION (worker.retention erases it
# after that), so that the order can be retried; SUCCEEDED and CANCELLED erase it in the
# update that makes them final (DESIGN.md: personal data only while it is needed). A
# REVERSED order was SUCCEEDED first, so it has none left to keep (Producer.retry says so);
# only one reversed before migration 0007 may still hold its payload, until the window ends.
PAYLOAD_KEPT = RETRYABLE


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


class TransitionOutcome(StrEnum):
    """What a transition found for one order."""

    OK = "ok"  # moved
    SAME = "same"  # already in the target state (the facts given are stored)
    UNEXPECTED = "unexpected"  # not in a state the caller expected
    FORBIDDEN = "forbidden"  # the transition table disallows the move
    FINAL = "final"  # the order is final and stays so
    MISSING = "missing"  # no such order
    OTHER_ID = "other_id"  # a report naming another provider id than the stored one
    # A cancel that would have moved the order, but a POST of it may have reached the
    # provider.
    POSTED = "posted"


@dataclass(frozen=True, slots=True)
class Transition:
    """What a transition found: ``moved`` only when this call changed the state."""

    outcome: TransitionOutcome
    previous: State | None

    @property
    def moved(self) -> bool:
        return self.outcome is TransitionOutcome.OK


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


def currency_code(code: str | None) -> str | None:
    """A currency code as the ledger keeps it (``IDR``), or None for anything else."""
    code = (code or "").strip().upper()
    return code if len(code) == 3 and code.isascii() and code.isalpha() else None


def to_ms(at: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding)."""
    return (at - EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return EPOCH + ms * _MS


def order_from_row(row: Sequence[Any]) -> Order:
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
        created_ms=to_ms(created_at),
        updated_ms=to_ms(updated_at),
        attempts=attempts,
        platform_trade_no=platform_trade_no,
        provider_status=provider_status,
        provider_message=provider_message,
        reason=reason,
        discrepancy=discrepancy,
        unseen_ms=to_ms(unseen_at) if unseen_at is not None else None,
        resubmits=resubmits,
        row_no=row_no,
        state_entered_ms=to_ms(state_entered_at),
        fee=fee,
        total_debited=total_debited,
        masked=masked,
        fee_currency=fee_currency,
        total_debited_currency=total_debited_currency,
        recheck_ms=to_ms(recheck_at) if recheck_at is not None else None,
        retry_of=retry_of,
    )
