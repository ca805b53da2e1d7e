"""What the outbox's tests share: orders walked through states (each step an event), and
reads of the outbox's tables."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from schemas import Payout
from worker.core.states import State
from worker.ledger import Ledger, new_batch_id
from worker.outbox import Deliveries, Sender

SECRET = "whsec-test-4242"
ACCOUNT = "5464438554636"
NAME = "Budi Santoso"


def new_order(ledger: Ledger, *, hold: bool = False, amount: str = "150000.00") -> str:
    fields = {
        "amount": amount,
        "bankAccountNo": ACCOUNT,
        "bankCode": "0002",
        "customerName": NAME,
        "email": "budi@example.com",
    }
    payout = Payout("ID", "IDR", Decimal(amount), f"ref-{uuid.uuid4().hex[:8]}", fields)
    ((trade_no, _),) = ledger.create_orders(
        [payout], batch_id=new_batch_id(), market="ID", hold=hold
    )
    return trade_no


def walk(ledger: Ledger, trade_no: str, *states: State, **facts: Any) -> None:
    for state in states:
        assert ledger.transition(trade_no, state, source="submit", **facts).moved, state


def rows(ledger: Ledger, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with ledger.pool.connection() as conn:
        return conn.execute(query, params).fetchall()


def let_time_pass(ledger: Ledger) -> None:
    """Every backoff over: each delivery due, a dead endpoint's next probe due."""
    with ledger.pool.connection() as conn:
        conn.execute("UPDATE outbox_deliveries SET next_at = now() WHERE state = 'pending'")
        conn.execute("UPDATE outbox_state SET retry_at = now() WHERE retry_at IS NOT NULL")


def endpoint_open(ledger: Ledger) -> bool:
    """The endpoint's breaker is open (one request at a time)."""
    ((retry_at,),) = rows(ledger, "SELECT retry_at FROM outbox_state")
    return retry_at is not None


def sender(deliveries: Deliveries, url: str, **kwargs: Any) -> Sender:
    return Sender(deliveries, url, SECRET, **kwargs)
