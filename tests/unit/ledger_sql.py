"""Changes to the test ledger's rows that no code path makes: moving time back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from worker.ledger import Ledger


def set_entered(ledger: Ledger, trade_nos: Sequence[str], ms: int) -> None:
    """Pretend the orders entered their states at ``ms`` (server ms)."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET state_entered_at = %s WHERE trade_no = ANY(%s)",
            (at, list(trade_nos)),
        )


def backdate(ledger: Ledger, trade_no: str, seconds: float) -> None:
    """Pretend the order entered its state, and its events happened, ``seconds`` earlier."""
    ago = timedelta(seconds=seconds)
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET state_entered_at = state_entered_at - %s WHERE trade_no = %s",
            (ago, trade_no),
        )
        conn.execute("UPDATE order_events SET at = at - %s WHERE trade_no = %s", (ago, trade_no))
