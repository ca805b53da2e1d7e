"""Reads of orders and their events: by tradeNo, a batch's tradeNos, the scans the
reconcile pass pages through, claims and retries, the open orders per state, the
server's clock; and the connection every part of the ledger goes through."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from worker.core.defaults import LEASE_TTL
from worker.core.states import State
from worker.ledger.model import EPOCH, PAGE, Order, from_ms, order_from_row, to_ms
from worker.ledger.sql import (
    ABANDONED_CLAIMS,
    CLAIM_END,
    OPEN_STATES,
    ORDER_COLUMNS,
    RETRIES,
    STATE_PAGE,
)


class Queries:
    """The ledger's reads, over a pool of connections each checked out for one short
    exchange, in autocommit (see :mod:`worker.ledger`).

    ``claim_ttl``: seconds a claim is leased for, from the claim or its last renewal
    (LEASE_TTL; see migration 0011 and worker.flows.heartbeat).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        on_final: Callable[[State, int], None] | None = None,
        claim_ttl: float = LEASE_TTL,
    ) -> None:
        self.pool = pool
        self.on_final = on_final
        self.claim_ttl = claim_ttl

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            conn.autocommit = True
            yield conn

    def get(self, trade_no: str) -> Order | None:
        query = sql.SQL("SELECT {} FROM orders WHERE trade_no = %s").format(ORDER_COLUMNS)
        with self._connection() as conn:
            row = conn.execute(query, (trade_no,)).fetchone()
        return order_from_row(row) if row is not None else None

    def get_many(self, trade_nos: Sequence[str]) -> list[Order | None]:
        """The orders of ``trade_nos`` in that order (None for an unknown tradeNo)."""
        query = sql.SQL("SELECT {} FROM orders WHERE trade_no = ANY(%s)").format(ORDER_COLUMNS)
        with self._connection() as conn:
            found = {row[0]: order_from_row(row) for row in conn.execute(query, (list(trade_nos),))}
        return [found.get(trade_no) for trade_no in trade_nos]

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
        return to_ms(row[0])

    def scan(self, state: State, *, older_than: float, now_ms: int) -> Iterator[tuple[str, int]]:
        """Every (tradeNo, entered ms) in ``state`` for ``older_than`` s at ``now_ms``,
        oldest first, read in pages by key: an order that leaves the state while it is
        read makes the scan skip no other, and one entering it now is too young."""
        cutoff = now_ms - int(older_than * 1000)
        after: tuple[str, datetime] | None = None
        while True:
            page = self._page(state, cutoff, after, PAGE)
            yield from ((trade_no, to_ms(at)) for trade_no, at in page)
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
        query = sql.SQL(STATE_PAGE).format(state=sql.Literal(str(state)))
        params = {
            # Entered at most at cutoff_ms, in whole milliseconds as the callers count.
            "before": from_ms(cutoff_ms + 1),
            "after": after[0] if after else "",
            "after_at": after[1] if after else EPOCH,
            "limit": limit,
        }
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def stale_claim(self, trade_no: str, lease: float) -> bool:
        """True when the order is SUBMITTING and its claim is abandoned: its lease expired
        (its holder stopped renewing it), or, claimed before leases existed (migration
        0011), it was claimed more than ``lease`` s ago (killed at its time limit)."""
        return self.abandoned_for(trade_no, lease) is not None

    def abandoned_for(self, trade_no: str, lease: float) -> float | None:
        """Seconds since the order's claim was last alive (its lease expired; see
        :meth:`stale_claim`), by the server's clock; None while the claim is alive or the
        order is not SUBMITTING."""
        with self._connection() as conn:
            row = conn.execute(CLAIM_END, {"trade_no": trade_no, "lease": lease}).fetchone()
        if row is None:
            return None
        since = (self.now_ms() - to_ms(row[0])) / 1000
        return since if since > 0 else None

    def abandoned_claims(self, lease: float, *, now_ms: int) -> list[tuple[str, int]]:
        """Every SUBMITTING order whose claim is abandoned at ``now_ms`` (see
        :meth:`stale_claim`), as (tradeNo, claimed ms), oldest first: one query on the
        index of open orders, as SUBMITTING orders are only those in flight."""
        params = {"lease": lease, "now": from_ms(now_ms)}
        with self._connection() as conn:
            rows = conn.execute(ABANDONED_CLAIMS, params).fetchall()
        return [(trade_no, to_ms(at)) for trade_no, at in rows]

    def retries_of(self, trade_no: str) -> list[tuple[str, State]]:
        """The order's retry, the retry of that, ...: (tradeNo, state), in that order."""
        with self._connection() as conn:
            rows = conn.execute(RETRIES, (trade_no,)).fetchall()
        return [(retry, State(state)) for retry, state in rows]

    def last_claimed_ms(self, trade_no: str) -> int | None:
        """When the order was last claimed for sending (its last POST, if any), or None."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT max(at) FROM order_events WHERE trade_no = %s AND to_state = 'SUBMITTING'",
                (trade_no,),
            ).fetchone()
        return to_ms(row[0]) if row is not None and row[0] is not None else None

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
        return to_ms(row[0]) if row is not None and row[0] is not None else None

    def open_states(self) -> dict[State, tuple[int, int]]:
        """For every state orders are open in (not final): how many, and when the oldest
        entered it (ms). One query on the index of open orders, however many are final."""
        with self._connection() as conn:
            rows = conn.execute(OPEN_STATES).fetchall()
        return {State(state): (n, to_ms(oldest)) for state, n, oldest in rows}

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

    def ping(self) -> None:
        """One round trip to the server; raises ``psycopg.OperationalError`` (a
        ``PoolTimeout`` too) when it cannot be reached."""
        with self._connection() as conn:
            conn.execute("SELECT 1")
