"""One payout found by the application's reference or by our tradeNo, and its history:
every ``order_events`` row, oldest first (``disburse payout`` and the console's payout
page read both)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from worker.ledger.model import Order, order_from_row
from worker.ledger.queries import Queries
from worker.ledger.sql import ORDER_COLUMNS


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One change of an order, as ``order_events`` keeps it."""

    id: int
    at: datetime
    source: str
    from_state: str | None
    to_state: str
    facts: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "source": self.source,
            "from": self.from_state,
            "to": self.to_state,
            "facts": self.facts,
        }


class History(Queries):
    """A payout by either of its names, and its events."""

    def find(self, reference_or_trade_no: str) -> Order | None:
        """The order whose tradeNo or application reference is the text given (both are
        unique; a tradeNo wins when one order's reference is another's tradeNo)."""
        query = sql.SQL(
            "SELECT {} FROM orders WHERE trade_no = %(key)s OR reference = %(key)s "
            "ORDER BY trade_no = %(key)s DESC LIMIT 1"
        ).format(ORDER_COLUMNS)
        with self._connection() as conn:
            row = conn.execute(query, {"key": reference_or_trade_no.strip()}).fetchone()
        return order_from_row(row) if row is not None else None

    def history(self, trade_no: str, limit: int = 500) -> list[OrderEvent]:
        """The order's events, oldest first (index ``order_events_trade_no``)."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id, at, source, from_state::text, to_state::text, facts "
                "FROM order_events WHERE trade_no = %s ORDER BY id LIMIT %s",
                (trade_no, limit),
            ).fetchall()
        return [OrderEvent(*row) for row in rows]
