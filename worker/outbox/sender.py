"""The webhook sender (when ``APP_WEBHOOK_URL`` is set).

A beat-driven run (tasks/outbox.py, its own queue; one at a time cluster-wide, under a
PostgreSQL advisory lock) takes the feed's new events into ``outbox_deliveries`` with
their exact body, and POSTs them signed ``Disburse-Signature: t=<unix>,v1=<hex
HMAC-SHA256 of "<t>.<body>">``. A 2xx delivers an event; anything else, or no answer in
10 s, is retried with the same id and body after an exponential backoff (at most an hour
apart, counted from the attempt's start), until it is delivered or, failing days after
it was written, given up (``disburse events --failed-deliveries``; ``redeliver``). Every
attempt is recorded.

**In order per payout, and nothing else waits.** A run sends each payout's oldest
pending event once it is due; a payout's later event waits for its earlier one to be
acknowledged (or given up), and for nothing else: one payout's retries never hold
another's events. An event being sent is leased (:data:`OUTBOX_LEASE`), so that no run
sends it again while it is in flight.

**As many at once as the endpoint takes** (:mod:`~worker.outbox.concurrency`): from
:data:`OUTBOX_CONCURRENCY` requests in flight, one more per success up to
:data:`OUTBOX_MAX_CONCURRENCY`, halved when requests get no answer or most fail. A slow
answer holds its own thread, not the others' turn: a request unanswered after
:data:`OUTBOX_SLOW` seconds no longer counts against the limit (at most
:data:`OUTBOX_MAX_IN_FLIGHT` in flight in all), so answers taking 10 s to a few requests
never stop the rest.

**A dead endpoint gets one request at a time** (:mod:`~worker.outbox.breaker`): judged
by the failure rate of recent attempts, so an endpoint that refuses or drops a third of
its requests keeps getting the rest at full speed; once 80% of them fail, one probe at
a time, backing off to one every 30 s, until one succeeds. It holds one thread of one
worker process; submissions and reconciliation never wait for it.

**A run's end.** A run sends for :data:`OUTBOX_BUDGET` seconds; then it releases the lock,
so that the next run (beat sends one every second) takes over at once, and records the
answers still in flight as they come (their events are leased). While the endpoint is
dead it waits for its probe under the lock, so a probe is never sent twice at once.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import asdict, dataclass

import psycopg
import requests

from worker.core.defaults import (
    OUTBOX_BUDGET,
    OUTBOX_CONCURRENCY,
    OUTBOX_LEASE,
    OUTBOX_MAX_CONCURRENCY,
    OUTBOX_MAX_IN_FLIGHT,
    OUTBOX_PATIENCE,
    OUTBOX_SLOW,
    OUTBOX_TIMEOUTS,
)
from worker.core.redact import redact
from worker.outbox.breaker import Breaker, Change
from worker.outbox.concurrency import Concurrency, Ticket
from worker.outbox.deliveries import Attempt, Deliveries, Delivery
from worker.outbox.feed import first_column
from worker.outbox.signature import SIGNATURE_HEADER, signature_header
from worker.provider.http_client import pooled_session

log = logging.getLogger(__name__)

_LOCK_KEY = 0x64697362_6F757462  # "disbout": one sending run at a time, cluster-wide


@dataclass
class RunReport:
    ran: bool = True
    taken: int = 0  # events taken from the feed into the outbox
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Request:
    """One request in flight: when it was sent (monotonic seconds), the limit then, and
    whether it probes a dead endpoint."""

    sent: float
    ticket: Ticket
    probe: bool


class _Run:
    """One run's requests in flight, its breaker and its limit."""

    def __init__(self, conn: psycopg.Connection, breaker: Breaker, limit: Concurrency) -> None:
        self.conn = conn
        self.breaker = breaker
        self.limit = limit
        self.flight: dict[Future[Attempt], _Request] = {}
        self.report = RunReport()


class Sender:
    """POSTs the outbox's events to the application, signed; one run at a time."""

    def __init__(
        self,
        deliveries: Deliveries,
        url: str,
        secret: str,
        *,
        session: requests.Session | None = None,
        concurrency: int = OUTBOX_CONCURRENCY,
        max_concurrency: int = OUTBOX_MAX_CONCURRENCY,
        slow: float = OUTBOX_SLOW,
        max_in_flight: int = OUTBOX_MAX_IN_FLIGHT,
        timeouts: tuple[float, float] = OUTBOX_TIMEOUTS,
        lease: float = OUTBOX_LEASE,
    ) -> None:
        self.deliveries = deliveries
        self.url = url
        self._secret = secret
        self.concurrency = concurrency  # the limit a run starts at
        self.max_concurrency = max_concurrency
        self.slow = slow
        self.max_in_flight = max_in_flight
        self.timeouts = timeouts
        self.lease = lease
        self.session = session or pooled_session(url, max_in_flight)

    def run(self, budget: float = OUTBOX_BUDGET) -> RunReport:
        """Take new events and send what is due for ``budget`` seconds, then record the
        answers still in flight; does nothing while another run holds the lock."""
        with self.deliveries.pool.connection() as conn:
            conn.autocommit = True
            if not first_column(
                conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
            ):
                return RunReport(ran=False)
            breaker = Breaker(self.deliveries.endpoint(conn))
            run = _Run(conn, breaker, Concurrency(self.concurrency, self.max_concurrency))
            executor = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="outbox")
            try:
                self._send(run, executor, budget)
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
                # The next run may start now; what is still in flight is leased.
                self._finish(run)
            except BaseException:
                conn.close()  # the lock goes with the session; the pool drops it
                raise
            finally:
                executor.shutdown(wait=False, cancel_futures=True)
        return run.report

    def _send(self, run: _Run, executor: ThreadPoolExecutor, budget: float) -> None:
        started = time.monotonic()
        deadline = started + budget
        patience = started + min(budget, OUTBOX_PATIENCE)
        while True:
            sending = time.monotonic() < deadline
            if sending:
                # Waiting for transactions to end only when nothing else is to be done.
                run.report.taken += self.deliveries.take(run.conn, wait=0.0 if run.flight else 0.2)
                self._start(run, executor)
            elif not run.breaker.open:
                return  # the answers still in flight are recorded after the lock is released
            if not run.flight:
                # Nothing to wait for: done, unless the feed waits for transactions still
                # running, which a run waits for a little (the next run is a second away).
                behind = self.deliveries.feed.behind and time.monotonic() < patience
                if not (sending and behind):
                    return
                continue
            done, _ = wait(run.flight, timeout=0.2, return_when=FIRST_COMPLETED)
            self._answered(run, done)

    def _start(self, run: _Run, executor: ThreadPoolExecutor) -> None:
        """Claims and sends what the limit (or, while the endpoint is dead, a probe) allows;
        the limit counts the requests in flight that are not slow yet."""
        now = time.monotonic()
        prompt = sum(1 for request in run.flight.values() if now - request.sent < self.slow)
        probe = run.breaker.open
        if probe:
            room = 1 if run.breaker.may_probe(time.time(), len(run.flight)) else 0
        else:
            room = min(run.limit.room(prompt), self.max_in_flight - len(run.flight))
        if room <= 0:
            return
        for delivery in self.deliveries.claim(run.conn, room, self.lease):
            request = _Request(now, run.limit.sent(prompt), probe)
            run.flight[executor.submit(self.send, delivery)] = request
            prompt += 1

    def _answered(self, run: _Run, done: set[Future[Attempt]]) -> None:
        """Records these attempts, and what they say of the endpoint."""
        now = time.time()
        attempts = []
        for future in done:
            request = run.flight.pop(future)
            attempt = future.result()
            attempts.append(attempt)
            change = run.breaker.record(attempt.ok, now, probe=request.probe)
            if change is not None:
                self.deliveries.save_endpoint(run.conn, run.breaker.endpoint)
                self._say(change, run.breaker, attempt, now)
            if change is Change.CLOSED:
                run.limit.restart()
            if attempt.ok:
                run.limit.succeeded(request.ticket)
            else:
                overloaded = (
                    not attempt.answered or attempt.status == 429 or run.breaker.struggling(now)
                )
                run.limit.failed(request.ticket, overloaded=overloaded)
        self._record(run, attempts)

    def _finish(self, run: _Run) -> None:
        """Records the answers still in flight as they come (their events leased that
        long); one later than that is dropped, its event sent again after the lease."""
        try:
            for future in as_completed(run.flight, timeout=self.lease):
                del run.flight[future]
                self._record(run, [future.result()])
        except FuturesTimeout:
            log.warning("%d webhook requests unanswered after %.0f s", len(run.flight), self.lease)

    def _record(self, run: _Run, attempts: list[Attempt]) -> None:
        if not attempts:
            return
        states = self.deliveries.record(run.conn, attempts)
        run.report.delivered += sum(1 for a in attempts if a.ok)
        run.report.failed_attempts += sum(1 for a in attempts if not a.ok)
        run.report.given_up += states.count("failed")

    @staticmethod
    def _say(change: Change, breaker: Breaker, attempt: Attempt, now: float) -> None:
        if change is Change.CLOSED:
            log.warning("APP_WEBHOOK_URL answers again")
            return
        retry_at = breaker.endpoint.retry_at or now
        log.warning(
            "APP_WEBHOOK_URL fails (%s; last: %s): one request at a time, the next in %.0f s",
            "most recent attempts failed" if change is Change.TRIPPED else "a probe failed",
            attempt.error,
            retry_at - now,
        )

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
