"""Retries and retention: the FAILED and REVERSED orders a batch may enqueue again, and
the payloads kept for that, erased once the retention window ends (worker.retention)."""

from __future__ import annotations

from psycopg import sql

from worker.ledger.model import PAGE, RETRYABLE, Order, order_from_row
from worker.ledger.queries import Queries
from worker.ledger.sql import KEPT, ORDER_COLUMNS, literals


class Retention(Queries):
    """Orders that may be retried, and their payloads erased in time."""

    def retry_candidates(
        self, batch_id: str
    ) -> list[tuple[Order, dict[str, str] | None, str | None]]:
        """The batch's FAILED and REVERSED orders in row order, each with its payload (None
        once erased) and the tradeNo of its retry (None while it has none)."""
        query = sql.SQL(
            "SELECT {}, payload, "
            "  (SELECT r.trade_no FROM orders r WHERE r.retry_of = o.trade_no) "
            "FROM orders o WHERE batch_id = %s AND state IN ({}) ORDER BY row_no"
        ).format(ORDER_COLUMNS, literals(RETRYABLE))
        with self._connection() as conn:
            rows = conn.execute(query, (batch_id,)).fetchall()
        return [(order_from_row(row[:-2]), row[-2], row[-1]) for row in rows]

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
            ).format(KEPT)
            cur = conn.execute(query, (older_than, limit))
            return cur.rowcount
