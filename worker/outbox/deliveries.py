"""The ``outbox_deliveries`` table: the feed's events taken in with their exact body,
each payout's oldest pending one claimed for sending (leased while in flight), every
attempt recorded with its backoff, given up days after the event, and redelivered on
request; and the endpoint's breaker state between runs (``outbox_state``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from worker.core.backoff import backoff
from worker.core.defaults import EVENT_RETRY_BASE, EVENT_RETRY_CAP
from worker.outbox.events import Event
from worker.outbox.feed import INTAKE, Feed, first_column

GIVE_UP_AFTER = timedelta(days=3)  # an attempt failing this long after the event: given up
_NAME = "webhook"  # outbox_state's row


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: int
    body: str
    attempts: int  # made before


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: int
    number: int  # 1 for the first attempt
    status: int | None  # the HTTP status; None when no answer came
    latency_ms: int
    error: str | None  # None: delivered

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def answered(self) -> bool:
        """An HTTP answer came (not a timeout or a connection error)."""
        return self.status is not None


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """Where one event's webhook stands (``disburse events``)."""

    event_id: int
    state: str  # pending | delivered | failed
    attempts: int
    last_status: int | None
    last_error: str | None
    next_at: datetime | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The endpoint's breaker as kept between runs: closed (``retry_at`` None), or open:
    the next probe not before ``retry_at``, after ``probes_failed`` failed ones."""

    probes_failed: int = 0
    retry_at: float | None = None  # Unix seconds

    @property
    def open(self) -> bool:
        return self.retry_at is not None


# Each payout's oldest pending event, if due (its backoff and any lease over), oldest
# first; leased while it is sent. An earlier event still pending, due or not, in flight
# or not, holds its payout's later ones, and nothing else.
_CLAIM = """
UPDATE outbox_deliveries d SET next_at = now() + make_interval(secs => %(lease)s)
FROM (
    SELECT d.event_id FROM outbox_deliveries d
    WHERE d.state = 'pending' AND d.next_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM outbox_deliveries p
          WHERE p.state = 'pending' AND p.trade_no = d.trade_no AND p.event_id < d.event_id)
    ORDER BY d.event_id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) due
WHERE d.event_id = due.event_id
RETURNING d.event_id, d.body, d.attempts
"""
_RECORD = """
WITH r AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(statuses)s::integer[], %(latencies)s::integer[],
                         %(errors)s::text[], %(delays)s::float8[])
        AS r(event_id, status, latency_ms, error, delay)
), attempts AS (
    INSERT INTO outbox_attempts (event_id, status, latency_ms, error)
    SELECT event_id, status, latency_ms, error FROM r
)
UPDATE outbox_deliveries d SET
    attempts = d.attempts + 1,
    last_status = r.status,
    last_error = r.error,
    state = CASE WHEN r.error IS NULL THEN 'delivered'
                 WHEN d.created_at < now() - %(give_up)s THEN 'failed'
                 ELSE 'pending' END,
    delivered_at = CASE WHEN r.error IS NULL THEN now() ELSE d.delivered_at END,
    next_at = CASE WHEN r.error IS NULL THEN d.next_at
                   ELSE now() + make_interval(secs => r.delay) END
FROM r WHERE d.event_id = r.event_id AND d.state = 'pending'
RETURNING d.state
"""
_ENQUEUE = """
INSERT INTO outbox_deliveries (event_id, trade_no, body)
SELECT * FROM unnest(%(ids)s::bigint[], %(trade_nos)s::text[], %(bodies)s::text[])
ON CONFLICT (event_id) DO {conflict}
"""
# A redelivery is a new request: pending now, its backoff and its give-up clock restarted
# (its earlier attempts stay recorded).
_AGAIN = (
    "UPDATE SET state = 'pending', next_at = now(), created_at = now(), attempts = 0 "
    "WHERE outbox_deliveries.state <> 'pending'"
)


def _retry_in(attempt: Attempt) -> float:
    """Seconds until a failed attempt's retry: its backoff, counted from when it was sent
    (an attempt that waited 10 s for no answer has waited out the first few already)."""
    delay = backoff(attempt.number, base=EVENT_RETRY_BASE, cap=EVENT_RETRY_CAP)
    return max(0.0, delay - attempt.latency_ms / 1000)


class Deliveries:
    """The ``outbox_deliveries`` table: what is to be sent, what was, and each attempt."""

    def __init__(self, pool: ConnectionPool, feed: Feed) -> None:
        self.pool = pool
        self.feed = feed

    def take(self, conn: psycopg.Connection, *, wait: float = 0.0) -> int:
        """Take the feed's events after the outbox's position; returns how many."""
        row = conn.execute("SELECT position FROM outbox_state WHERE name = %s", (_NAME,)).fetchone()
        position = first_column(row)
        page = self.feed.read(position, INTAKE, wait=wait)
        if page.cursor == position:
            return 0
        with conn.transaction():
            self._enqueue(conn, page.events, again=False)
            conn.execute(
                "UPDATE outbox_state SET position = %s WHERE name = %s AND position = %s",
                (page.cursor, _NAME, position),
            )
        return len(page.events)

    def _enqueue(self, conn: psycopg.Connection, events: Sequence[Event], *, again: bool) -> int:
        query = _ENQUEUE.format(conflict=_AGAIN if again else "NOTHING")
        cur = conn.execute(
            query,
            {
                "ids": [e.cursor for e in events],
                "trade_nos": [e.trade_no for e in events],
                "bodies": [e.body() for e in events],
            },
        )
        return cur.rowcount

    def claim(self, conn: psycopg.Connection, limit: int, lease: float) -> list[Delivery]:
        """Up to ``limit`` of the payouts' oldest pending events that are due, oldest
        first, each leased for ``lease`` seconds: not due again until its attempt is
        recorded, or the lease is over (its sender gone)."""
        rows = conn.execute(_CLAIM, {"limit": limit, "lease": lease}).fetchall()
        return sorted((Delivery(*row) for row in rows), key=lambda d: d.event_id)

    def record(self, conn: psycopg.Connection, attempts: Sequence[Attempt]) -> list[str]:
        """Record the attempts; the deliveries' new states (delivered, pending, failed)."""
        if not attempts:
            return []
        delays = [0.0 if a.ok else _retry_in(a) for a in attempts]
        rows = conn.execute(
            _RECORD,
            {
                "ids": [a.event_id for a in attempts],
                "statuses": [a.status for a in attempts],
                "latencies": [a.latency_ms for a in attempts],
                "errors": [a.error for a in attempts],
                "delays": delays,
                "give_up": GIVE_UP_AFTER,
            },
        ).fetchall()
        return [state for (state,) in rows]

    def endpoint(self, conn: psycopg.Connection) -> Endpoint:
        """The endpoint's breaker as the last run left it."""
        row = conn.execute(
            "SELECT failures, extract(epoch FROM retry_at) FROM outbox_state WHERE name = %s",
            (_NAME,),
        ).fetchone()
        assert row is not None
        failures, retry_at = row
        return Endpoint(failures, None if retry_at is None else float(retry_at))

    def save_endpoint(self, conn: psycopg.Connection, endpoint: Endpoint) -> None:
        conn.execute(
            "UPDATE outbox_state SET failures = %s, retry_at = to_timestamp(%s) WHERE name = %s",
            (endpoint.probes_failed, endpoint.retry_at, _NAME),
        )

    # for people (the CLI) ---------------------------------------------------------------
    def status(self, event_ids: Sequence[int]) -> dict[int, DeliveryStatus]:
        """Where each of these events' webhooks stands (absent: never taken)."""
        found = self._statuses("d.event_id = ANY(%(ids)s)", {"ids": list(event_ids)})
        return {status.event_id: status for status in found}

    def failing(
        self, *, after: int = 0, limit: int = 100, batch_id: str | None = None
    ) -> list[DeliveryStatus]:
        """Given up, or pending after a failed attempt (of ``batch_id``): oldest first."""
        where = (
            "(d.state = 'failed' OR (d.state = 'pending' AND d.attempts > 0)) "
            "AND d.event_id > %(after)s AND (%(batch)s::text IS NULL OR o.batch_id = %(batch)s)"
        )
        params = {"after": after, "batch": batch_id, "limit": limit}
        return self._statuses(where + " ORDER BY d.event_id LIMIT %(limit)s", params)

    def _statuses(self, where: str, params: dict[str, Any]) -> list[DeliveryStatus]:
        query = sql.SQL(
            "SELECT d.event_id, d.state, d.attempts, d.last_status, d.last_error, d.next_at, "
            "d.delivered_at FROM outbox_deliveries d JOIN orders o USING (trade_no) WHERE {}"
        ).format(sql.SQL(where))  # where: one of this class's constants
        with self.pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [DeliveryStatus(*row) for row in rows]

    def redeliver(self, events: Sequence[Event]) -> int:
        """Send these events again (also ones never taken, or taken before the outbox's
        start); returns how many were made pending. One already pending is left as it is."""
        if not events:
            return 0
        with self.pool.connection() as conn:
            conn.autocommit = True
            return self._enqueue(conn, events, again=True)
