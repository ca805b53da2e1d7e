"""The application's event feed over ``order_events``, never read past its horizon.

**The feed** reads events by ``order_events.id``, oldest first. Ids are drawn at insert
and committed in another order, so the feed never reads past its *horizon*: the highest
id below which no transaction still open can commit a row. A tick takes the last id
drawn, then a transaction id of its own; once every transaction older than that one has
ended (the oldest still running is younger), every id up to the tick's is committed or
never will be (migration 0005 makes each transaction take its id before it draws one).
A long transaction therefore delays the feed, and never makes it skip an event.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from worker.outbox.events import Event, event_from_row, seen_sql

INTAKE = 1000  # events taken into the outbox per round trip

_SEEN_TO = seen_sql("e.to_state")
_SEEN_FROM = seen_sql("e.from_state")
# The events (see worker.outbox.events) matching {where}, oldest first. The provider's id is the
# one known as of the event, so the body is the same whenever it is built.
_EVENTS = sql.SQL(
    """
SELECT e.id, e.at, e.source, {seen_from}, {seen_to}, e.facts,
       o.trade_no, o.reference, o.batch_id, o.market, o.currency, o.amount, o.retry_of,
       coalesce(e.facts ->> 'platform_trade_no', (
           SELECT p.facts ->> 'platform_trade_no' FROM order_events p
           WHERE p.trade_no = e.trade_no AND p.id < e.id AND p.facts ? 'platform_trade_no'
           ORDER BY p.id DESC LIMIT 1))
FROM order_events e JOIN orders o USING (trade_no)
WHERE ({seen_to} IS DISTINCT FROM {seen_from} OR e.facts ? 'batch_event') AND ({where})
ORDER BY e.id LIMIT %(limit)s
"""
)
_LAST_ID = "SELECT pg_sequence_last_value(pg_get_serial_sequence('order_events', 'id')::regclass)"
# A transaction id of its own, so greater than every one assigned before (a snapshot's
# xmax is not: it is one past the newest transaction *ended*, and a newer one still
# running is not in its list). It costs one transaction id per tick.
_NEXT_XID = "SELECT pg_current_xact_id()::text"
# The oldest transaction still running (the snapshot's xmax when none is).
_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: list[Event]
    cursor: int  # where the next read starts: every event up to it was returned


@dataclass(frozen=True, slots=True)
class _Tick:
    last_id: int  # every id up to this one was drawn ...
    next_xid: int  # ... by a transaction older than this transaction id


class Feed:
    """The application's event feed: events after a cursor, never past the horizon."""

    MAX_TICKS = 16

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._safe = 0  # no event can still appear at or below this id
        self._ticks: deque[_Tick] = deque()
        self._lock = threading.Lock()

    def horizon(self, wait: float = 0.0) -> int:
        """The highest id up to which every event is committed or never will be.

        Takes a tick now; with ``wait`` waits up to that long for the transactions open
        now to end, so that every event committed before the call is below it.
        """
        deadline = time.monotonic() + wait
        pause = 0.002
        with self.pool.connection() as conn:
            conn.autocommit = True
            # The last id first, then a new transaction id: a transaction that drew an id
            # up to the last had its transaction id before, so a smaller one.
            last = first_column(conn.execute(_LAST_ID).fetchone()) or 0
            tick = _Tick(last, int(first_column(conn.execute(_NEXT_XID).fetchone())))
            xmin = _xmin(conn)
            with self._lock:
                if len(self._ticks) == self.MAX_TICKS:
                    self._ticks.pop()  # the newest; the one taken now replaces it
                self._ticks.append(tick)
                self._promote(xmin)
            while self._safe < tick.last_id and time.monotonic() < deadline:
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                xmin = _xmin(conn)
                with self._lock:
                    self._promote(xmin)
        return self._safe

    @property
    def behind(self) -> bool:
        """True while a tick waits for transactions to end: events may be on their way."""
        return bool(self._ticks)

    def _promote(self, xmin: int) -> None:
        """Every tick whose transactions have all ended moves the horizon up to it."""
        while self._ticks and self._ticks[0].next_xid <= xmin:
            self._safe = max(self._safe, self._ticks.popleft().last_id)

    def read(
        self, after: int, limit: int, *, wait: float = 0.0, batch_id: str | None = None
    ) -> FeedPage:
        """Up to ``limit`` events after ``after``, oldest first (``wait``: see horizon)."""
        horizon = self.horizon(wait)
        if horizon <= after:
            return FeedPage([], after)
        where: sql.Composable = sql.SQL("e.id > %(after)s AND e.id <= %(horizon)s")
        if batch_id is not None:
            where = sql.SQL("{} AND o.batch_id = %(batch)s").format(where)
        params = {"after": after, "horizon": horizon, "batch": batch_id, "limit": limit}
        found = self._select(where, params)
        return FeedPage(found, found[-1].cursor if len(found) == limit else horizon)

    def follow(
        self, after: int = 0, *, poll: float = 1.0, batch_id: str | None = None, limit: int = 500
    ) -> Iterator[Event]:
        """Every event after ``after``, then each new one as it is committed (polling
        every ``poll`` s): the blocking form, for code that consumes continuously."""
        while True:
            page = self.read(after, limit, wait=poll, batch_id=batch_id)
            yield from page.events
            after = page.cursor
            if len(page.events) < limit:
                time.sleep(poll)

    def by_ids(self, ids: Sequence[int]) -> list[Event]:
        """These events (an id that is no event is left out), oldest first."""
        params = {"ids": list(ids), "limit": len(ids)}
        return self._select(sql.SQL("e.id = ANY(%(ids)s)"), params)

    def since(self, at: datetime, *, after: int = 0, limit: int = INTAKE) -> list[Event]:
        """Events written at or after ``at`` (and after the cursor ``after``), oldest first."""
        params = {"at": at, "after": after, "limit": limit}
        return self._select(sql.SQL("e.at >= %(at)s AND e.id > %(after)s"), params)

    def _select(self, where: sql.Composable, params: dict[str, Any]) -> list[Event]:
        query = _EVENTS.format(seen_from=_SEEN_FROM, seen_to=_SEEN_TO, where=where)
        with self.pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [event_from_row(row) for row in rows]


def first_column(row: Sequence[Any] | None) -> Any:
    assert row is not None
    return row[0]


def _xmin(conn: psycopg.Connection) -> int:
    return int(first_column(conn.execute(_XMIN).fetchone()))
