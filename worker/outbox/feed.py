"""Outcomes to the application: the event feed over ``order_events``, and signed webhooks.

**Which rows are events.** The application sees a payout's state as it matters to it:
sending (SUBMITTING) and not knowing whether the provider got it (UNKNOWN) are steps of
QUEUED, so a retry or an unknown outcome adds no event. An ``order_events`` row is an
event when it changes that state (:func:`public_state`); the rows that record a report
not applied (a discrepancy) or a message republished change none and are not events.
The types are ``payout.held``, ``.queued``, ``.processing``, ``.succeeded``,
``.failed``, ``.review``, ``.cancelled`` and ``.reversed``.

**The feed** reads events by ``order_events.id``, oldest first. Ids are drawn at insert
and committed in another order, so the feed never reads past its *horizon*: the highest
id below which no transaction still open can commit a row. A tick takes the last id
drawn, then a transaction id of its own; once every transaction older than that one has
ended (the oldest still running is younger), every id up to the tick's is committed or
never will be (migration 0005 makes each transaction take its id before it draws one).
A long transaction therefore delays the feed, and never makes it skip an event.

**Webhooks** (when ``APP_WEBHOOK_URL`` is set): a beat-driven run (tasks/outbox.py, its
own queue; one at a time cluster-wide, under a PostgreSQL advisory lock) takes the
feed's new events into ``outbox_deliveries`` with their exact body, and POSTs each
payout's oldest pending event, up to :data:`CONCURRENCY` at once, signed
``Disburse-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``. A 2xx delivers it;
anything else, or no answer in 10 s, is retried with the same id and body after an
exponential backoff (at most an hour apart), until it is delivered or, failing days after
it was written, given up (``disburse events --failed-deliveries``; ``redeliver``). After
a few failed attempts in a row the endpoint gets one request at a time, backing off to
once every 30 s, until one succeeds: a dead endpoint holds one worker process for one
request at a time, and submissions and reconciliation never wait for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import requests
from psycopg import sql
from psycopg_pool import ConnectionPool

from worker.backoff import backoff
from worker.http_client import pooled_session
from worker.redact import redact
from worker.states import State

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Disburse-Signature"
TOLERANCE = 300  # seconds a signed request stays acceptable to the application
OUTBOX_EVERY = 1.0  # seconds between sending runs (celeryconfig's beat entry)
BUDGET = 20.0  # a run sends for this long, then leaves the rest to the next run
TIMEOUTS = (3.05, 10.0)  # (connect, read): no answer in 10 s is a failed attempt
CONCURRENCY = 8  # requests in flight at once to a healthy endpoint
RETRY_BASE = 2.0  # an event's retries: 1-2 s, 2-4 s, ... (retry.backoff)
RETRY_CAP = 3600.0  # ... and at most an hour apart
# After this many failed attempts in a row (none succeeding between them) the endpoint
# gets one request at a time, backing off up to 30 s, until one succeeds; a few
# events refused or timing out among successes change nothing.
TRIP_AFTER = 3
PROBE_CAP = 30.0
GIVE_UP_AFTER = timedelta(days=3)  # an attempt failing this long after the event: given up
INTAKE = 1000  # events taken into the outbox per round trip
PATIENCE = 5.0  # seconds a run with nothing to send waits for transactions still running
_LOCK_KEY = 0x64697362_6F757462  # "disbout": one sending run at a time, cluster-wide
_NAME = "webhook"  # outbox_state's row

# What the application sees of each state: sending, and not knowing whether the provider
# got it, are steps of QUEUED.
_SEEN_AS = {State.SUBMITTING: State.QUEUED, State.UNKNOWN: State.QUEUED}
EVENT_TYPES = {state: f"payout.{state.lower()}" for state in State if state not in _SEEN_AS}


def public_state(state: State) -> State:
    """The state as the application sees it."""
    return _SEEN_AS.get(state, state)


def _seen_sql(column: str) -> sql.Composable:
    """:func:`public_state` in SQL, from the same table."""
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(str(s)), sql.Literal(str(seen)))
        for s, seen in _SEEN_AS.items()
    )
    column_sql = sql.SQL(column)
    return sql.SQL("(CASE {} {} ELSE {} END)").format(column_sql, cases, column_sql)


_SEEN_TO = _seen_sql("e.to_state")
_SEEN_FROM = _seen_sql("e.from_state")
# The events (see the module doc) matching {where}, oldest first. The provider's id is the
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
WHERE {seen_to} IS DISTINCT FROM {seen_from} AND ({where})
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
class Event:
    """One change of a payout's state as the application sees it; no personal data."""

    cursor: int  # order_events.id: pass it as ``after`` to read on from here
    type: str  # payout.<state in lower case>
    at: datetime
    state: State
    previous_state: State | None  # None for the payout's creation
    trade_no: str
    reference: str | None
    batch_id: str
    market: str
    currency: str
    amount: Decimal
    source: str  # producer, submit, webhook, lookup, reconcile, operator, sweeper
    platform_trade_no: str | None = None
    provider_status: str | None = None
    provider_message: str | None = None
    reason: str | None = None
    retry_of: str | None = None  # the FAILED or REVERSED payout this one enqueued again

    @property
    def id(self) -> str:
        """Unique and stable: the same on every delivery of this event."""
        return f"evt_{self.cursor}"

    @property
    def created(self) -> int:
        """Unix seconds."""
        return int(self.at.timestamp())

    def to_dict(self) -> dict[str, Any]:
        """The webhook's body (the wire contract of DESIGN.md)."""
        return {
            "id": self.id,
            "type": self.type,
            "created": self.created,
            "data": {
                "trade_no": self.trade_no,
                "reference": self.reference,
                "batch_id": self.batch_id,
                "market": self.market,
                "currency": self.currency,
                "amount": format(self.amount, "f"),
                "state": str(self.state),
                "previous_state": str(self.previous_state) if self.previous_state else None,
                "platform_trade_no": self.platform_trade_no,
                "provider_status": self.provider_status,
                "provider_message": self.provider_message,
                "reason": self.reason,
                "source": self.source,
                "retry_of": self.retry_of,
            },
        }

    def body(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _event(row: Sequence[Any]) -> Event:
    (cursor, at, source, seen_from, seen_to, facts, trade_no, reference, batch_id, market,
     currency, amount, retry_of, platform_trade_no) = row  # fmt: skip
    facts = facts or {}

    def text(name: str) -> str | None:
        # Provider text is masked when stored; masked again here, as it leaves the system.
        value = facts.get(name)
        return redact(value) if value not in (None, "") else None

    state = State(seen_to)
    return Event(
        cursor=cursor,
        type=EVENT_TYPES[state],
        at=at,
        state=state,
        previous_state=State(seen_from) if seen_from else None,
        trade_no=trade_no,
        reference=reference,
        batch_id=batch_id,
        market=market,
        currency=currency,
        amount=amount,
        source=source,
        platform_trade_no=platform_trade_no,
        provider_status=facts.get("provider_status"),
        provider_message=text("provider_message"),
        reason=text("reason") or text("note"),
        retry_of=retry_of,
    )


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
            last = _one(conn.execute(_LAST_ID).fetchone()) or 0
            tick = _Tick(last, int(_one(conn.execute(_NEXT_XID).fetchone())))
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
        return [_event(row) for row in rows]


def _one(row: Sequence[Any] | None) -> Any:
    assert row is not None
    return row[0]


def _xmin(conn: psycopg.Connection) -> int:
    return int(_one(conn.execute(_XMIN).fetchone()))


# signatures -------------------------------------------------------------------------
def _digest(body: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    return f"t={timestamp},v1={_digest(body, secret, timestamp)}"


def verify_webhook(
    body: bytes | str,
    header: str | None,
    secret: str,
    tolerance: float = TOLERANCE,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` (``Disburse-Signature``) signs exactly ``body`` (the raw
    request body) with ``secret``, at a time within ``tolerance`` seconds of ``now``.

    The application's side of the webhooks. Compared in constant time; a header with
    several ``v1`` values (while a secret is being rotated) passes when one matches.
    """
    if isinstance(body, str):
        body = body.encode()
    if not header or not secret:
        return False
    timestamp: int | None = None
    given: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            given.append(value)
    if timestamp is None or not given:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _digest(body, secret, timestamp).encode()
    # Every candidate compared, so the time taken does not say which one matched.
    return sum(hmac.compare_digest(value.encode(), expected) for value in given) > 0


# deliveries --------------------------------------------------------------------------
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


@dataclass
class RunReport:
    ran: bool = True
    taken: int = 0  # events taken from the feed into the outbox
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass
class _Endpoint:
    """Failed attempts in a row; from TRIP_AFTER on, the next one not before ``retry_at``."""

    failures: int = 0
    retry_at: float = 0.0  # Unix seconds


_DUE = """
SELECT d.event_id, d.body, d.attempts FROM outbox_deliveries d
WHERE d.state = 'pending' AND d.next_at <= now() AND NOT (d.event_id = ANY(%(busy)s))
  AND NOT EXISTS (
      SELECT 1 FROM outbox_deliveries p
      WHERE p.state = 'pending' AND p.trade_no = d.trade_no AND p.event_id < d.event_id)
ORDER BY d.event_id LIMIT %(limit)s
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


class Deliveries:
    """The ``outbox_deliveries`` table: what is to be sent, what was, and each attempt."""

    def __init__(self, pool: ConnectionPool, feed: Feed) -> None:
        self.pool = pool
        self.feed = feed

    def take(self, conn: psycopg.Connection, *, wait: float = 0.0) -> int:
        """Take the feed's events after the outbox's position; returns how many."""
        row = conn.execute("SELECT position FROM outbox_state WHERE name = %s", (_NAME,)).fetchone()
        position = _one(row)
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

    def due(self, conn: psycopg.Connection, limit: int, busy: Sequence[int]) -> list[Delivery]:
        """Each payout's oldest pending event, if due, oldest first; not those in flight."""
        rows = conn.execute(_DUE, {"limit": limit, "busy": list(busy)}).fetchall()
        return [Delivery(*row) for row in rows]

    def record(self, conn: psycopg.Connection, attempts: Sequence[Attempt]) -> list[str]:
        """Record the attempts; the deliveries' new states (delivered, pending, failed)."""
        if not attempts:
            return []
        delays = [
            0.0 if a.ok else backoff(a.number, base=RETRY_BASE, cap=RETRY_CAP) for a in attempts
        ]
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

    def endpoint(self, conn: psycopg.Connection) -> _Endpoint:
        row = conn.execute(
            "SELECT failures, extract(epoch FROM retry_at) FROM outbox_state WHERE name = %s",
            (_NAME,),
        ).fetchone()
        assert row is not None
        return _Endpoint(row[0], float(row[1] or 0.0))

    def save_endpoint(self, conn: psycopg.Connection, endpoint: _Endpoint) -> None:
        conn.execute(
            "UPDATE outbox_state SET failures = %s, retry_at = to_timestamp(%s) WHERE name = %s",
            (endpoint.failures, endpoint.retry_at or None, _NAME),
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


class Sender:
    """POSTs the outbox's events to the application, signed; one run at a time."""

    def __init__(
        self,
        deliveries: Deliveries,
        url: str,
        secret: str,
        *,
        session: requests.Session | None = None,
        concurrency: int = CONCURRENCY,
        timeouts: tuple[float, float] = TIMEOUTS,
    ) -> None:
        self.deliveries = deliveries
        self.url = url
        self._secret = secret
        self.concurrency = concurrency
        self.timeouts = timeouts
        self.session = session or pooled_session(url, concurrency)

    def run(self, budget: float = BUDGET) -> RunReport:
        """Take new events and send what is due for ``budget`` seconds (then finish the
        requests in flight); does nothing while another run holds the lock."""
        with self.deliveries.pool.connection() as conn:
            conn.autocommit = True
            if not _one(conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()):
                return RunReport(ran=False)
            try:
                report = self._run(conn, budget)
            except BaseException:
                conn.close()  # the lock goes with the session; the pool drops it
                raise
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        return report

    def _run(self, conn: psycopg.Connection, budget: float) -> RunReport:
        report = RunReport()
        deadline = time.monotonic() + budget
        patience = time.monotonic() + min(budget, PATIENCE)
        endpoint = self.deliveries.endpoint(conn)
        busy: dict[Future[Attempt], int] = {}
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="outbox") as pool:
            while True:
                if time.monotonic() < deadline:
                    # Waiting for transactions to end only when nothing else is to be done.
                    report.taken += self.deliveries.take(conn, wait=0.0 if busy else 0.2)
                    room = self._room(endpoint, len(busy))
                    if room:
                        for delivery in self.deliveries.due(conn, room, list(busy.values())):
                            busy[pool.submit(self.send, delivery)] = delivery.event_id
                if not busy:
                    # Nothing to send: done, unless the feed waits for transactions still
                    # running, which a run waits for a little (the next run is a second away).
                    if not self.deliveries.feed.behind or time.monotonic() > patience:
                        break
                    continue
                done, _ = wait(busy, timeout=0.2, return_when=FIRST_COMPLETED)
                attempts = [future.result() for future in done]
                for future in done:
                    del busy[future]
                self._recorded(conn, attempts, endpoint, report)
        return report

    def _room(self, endpoint: _Endpoint, busy: int) -> int:
        if endpoint.failures < TRIP_AFTER:
            return self.concurrency - busy
        # Failing: one request at a time, once its backoff has passed.
        return 1 if busy == 0 and time.time() >= endpoint.retry_at else 0

    def _recorded(
        self,
        conn: psycopg.Connection,
        attempts: list[Attempt],
        endpoint: _Endpoint,
        report: RunReport,
    ) -> None:
        if not attempts:
            return
        states = self.deliveries.record(conn, attempts)
        report.delivered += sum(1 for a in attempts if a.ok)
        report.failed_attempts += sum(1 for a in attempts if not a.ok)
        report.given_up += states.count("failed")
        if any(a.ok for a in attempts):
            if endpoint.failures >= TRIP_AFTER:
                log.warning(
                    "APP_WEBHOOK_URL answers again, after %d failed attempts", endpoint.failures
                )
            if endpoint.failures:
                endpoint.failures, endpoint.retry_at = 0, 0.0
                self.deliveries.save_endpoint(conn, endpoint)
            return
        endpoint.failures += len(attempts)
        if endpoint.failures >= TRIP_AFTER:
            delay = backoff(endpoint.failures - TRIP_AFTER + 1, cap=PROBE_CAP)
            endpoint.retry_at = time.time() + delay
            log.warning(
                "APP_WEBHOOK_URL failed %d times in a row (last: %s); one request at a time, "
                "the next in %.0f s",
                endpoint.failures,
                attempts[-1].error,
                delay,
            )
        self.deliveries.save_endpoint(conn, endpoint)

    def send(self, delivery: Delivery) -> Attempt:
        """One POST of one event, signed now."""
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "disburse-outbox",
            SIGNATURE_HEADER: signature_header(body, self._secret, int(time.time())),
        }
        started = time.monotonic()
        status: int | None = None
        try:
            response = self.session.post(
                self.url, data=body, headers=headers, timeout=self.timeouts, allow_redirects=False
            )
            status = response.status_code
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except requests.RequestException as exc:
            error = redact(f"{type(exc).__name__}: {exc}", limit=200)
        latency = int((time.monotonic() - started) * 1000)
        return Attempt(delivery.event_id, delivery.attempts + 1, status, latency, error)
