"""Batches as people see them: a batch's counts, amounts and costs per state and
currency counted from its orders as they are now, the newest batches, and their notes."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb

from worker.core.states import SETTLED_STATES, State
from worker.ledger.model import BatchSummary, Source, from_ms, to_ms
from worker.ledger.queries import Queries
from worker.ledger.sql import COSTS

# Batch notes and the column that keeps each.
BATCH_NOTES = {"held": "hold_reason"}


class Batches(Queries):
    """Batch summaries and notes."""

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
            costs = conn.execute(COSTS, {"batch": batch_id}).fetchall()
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
            created_ms=to_ms(created_at),
            market=market,
            held_reason=held_reason,
            fees=fees,
            debited=debited,
        )

    def set_batch_note(self, batch_id: str, name: str, value: str | None) -> None:
        """Store (or with None clear) a note on the batch: ``held``, why it is still held."""
        if name not in BATCH_NOTES:
            raise ValueError(f"unknown batch note {name!r}: expected one of {sorted(BATCH_NOTES)}")
        query = sql.SQL("UPDATE batches SET {} = %s WHERE id = %s").format(
            sql.Identifier(BATCH_NOTES[name])
        )
        with self._connection() as conn:
            conn.execute(query, (value, batch_id))

    def batch_event(
        self, batch_id: str, kind: str, source: Source, facts: Mapping[str, Any]
    ) -> None:
        """Record ``batch.<kind>`` (held, approved, released) for the application's feed.

        It is a row of the batch's first order's history that changes no state, its
        facts naming the batch event (worker.outbox.events): so it shares the feed's
        cursor, horizon and webhook deliveries with the payouts' events.
        """
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO order_events (trade_no, source, from_state, to_state, facts) "
                "SELECT trade_no, %s, state, state, %s FROM orders WHERE batch_id = %s "
                "ORDER BY row_no LIMIT 1",
                (source, Jsonb({**facts, "batch_event": kind}), batch_id),
            )

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
            ids = [row[0] for row in conn.execute(query, (from_ms(since_ms or 0), limit))]
        # One read per batch, the same as ``batch``: a listing is a page of a few.
        found = (self.batch(batch_id) for batch_id in ids)
        return [summary for summary in found if summary is not None]
