"""The webhook sender (when ``APP_WEBHOOK_URL`` is set): a beat-driven run
(tasks/outbox.py, its own queue; one at a time cluster-wide, under a PostgreSQL advisory
lock) takes the feed's new events into ``outbox_deliveries`` with their exact body, and
POSTs each payout's oldest pending event, up to :data:`OUTBOX_CONCURRENCY` at once, signed
``Disburse-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``. A 2xx delivers
it; anything else, or no answer in 10 s, is retried with the same id and body after an
exponential backoff (at most an hour apart), until it is delivered or, failing days
after it was written, given up (``disburse events --failed-deliveries``; ``redeliver``).
After a few failed attempts in a row the endpoint gets one request at a time, backing
off to once every 30 s, until one succeeds: a dead endpoint holds one worker process for
one request at a time, and submissions and reconciliation never wait for it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass

import psycopg
import requests

from worker.core.backoff import backoff
from worker.core.defaults import (
    OUTBOX_BUDGET,
    OUTBOX_CONCURRENCY,
    OUTBOX_PATIENCE,
    OUTBOX_PROBE_CAP,
    OUTBOX_TIMEOUTS,
    TRIP_AFTER,
)
from worker.core.redact import redact
from worker.outbox.deliveries import Attempt, Deliveries, Delivery, Endpoint
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
        timeouts: tuple[float, float] = OUTBOX_TIMEOUTS,
    ) -> None:
        self.deliveries = deliveries
        self.url = url
        self._secret = secret
        self.concurrency = concurrency
        self.timeouts = timeouts
        self.session = session or pooled_session(url, concurrency)

    def run(self, budget: float = OUTBOX_BUDGET) -> RunReport:
        """Take new events and send what is due for ``budget`` seconds (then finish the
        requests in flight); does nothing while another run holds the lock."""
        with self.deliveries.pool.connection() as conn:
            conn.autocommit = True
            if not first_column(
                conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
            ):
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
        patience = time.monotonic() + min(budget, OUTBOX_PATIENCE)
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

    def _room(self, endpoint: Endpoint, busy: int) -> int:
        if endpoint.failures < TRIP_AFTER:
            return self.concurrency - busy
        # Failing: one request at a time, once its backoff has passed.
        return 1 if busy == 0 and time.time() >= endpoint.retry_at else 0

    def _recorded(
        self,
        conn: psycopg.Connection,
        attempts: list[Attempt],
        endpoint: Endpoint,
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
            delay = backoff(endpoint.failures - TRIP_AFTER + 1, cap=OUTBOX_PROBE_CAP)
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
