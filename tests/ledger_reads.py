"""Reads of the ledger that only tests make (no code path needs them): an order's
history, its payload, the order of a reference, the orders with a discrepancy, and when
an order entered its state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.core.states import State
from worker.ledger import Ledger

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def history(ledger: Ledger, trade_no: str) -> list[tuple[int, str]]:
    """The order's events, oldest first: (ms, "STATE source note") or, for a report
    recorded but not applied, (ms, "DISCREPANCY <reported state> source note")."""
    with ledger.pool.connection() as conn:
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
                for part in (f"DISCREPANCY {reported}" if reported else to_state, source, note)
                if part
            ),
        )
        for at, to_state, source, reported, note in rows
    ]


def payload(ledger: Ledger, trade_no: str) -> dict[str, str]:
    """The exact fields to send for this order (without tradeNo, timestamp, sign).

    KeyError when there is no such order, or it is final and its fields are erased.
    """
    with ledger.pool.connection() as conn:
        row = conn.execute("SELECT payload FROM orders WHERE trade_no = %s", (trade_no,)).fetchone()
    if row is None or row[0] is None:
        raise KeyError(trade_no)
    return dict(row[0])


def trade_no_for(ledger: Ledger, reference: str) -> str | None:
    with ledger.pool.connection() as conn:
        row = conn.execute(
            "SELECT trade_no FROM orders WHERE reference = %s", (reference,)
        ).fetchone()
    return row[0] if row is not None else None


def discrepancies(ledger: Ledger, limit: int = 100) -> list[str]:
    """Orders with a report recorded but not applied, the latest first."""
    with ledger.pool.connection() as conn:
        rows = conn.execute(
            "SELECT trade_no FROM order_events WHERE facts ? 'discrepancy' "
            "GROUP BY trade_no ORDER BY max(id) DESC LIMIT %s",
            (limit,),
        ).fetchall()
    return [trade_no for (trade_no,) in rows]


def entered_ms(ledger: Ledger, trade_no: str, state: State) -> int | None:
    """When the order entered ``state`` (if it is in that state now)."""
    with ledger.pool.connection() as conn:
        row = conn.execute(
            "SELECT state_entered_at FROM orders WHERE trade_no = %s AND state = %s",
            (trade_no, str(state)),
        ).fetchone()
    return _ms(row[0]) if row is not None else None
