"""Reconciliation: bring every pending payout to the state the provider knows.

A pass (Celery beat, never two at once) sends stale claims and pending orders to
lookups, oldest first in pages; each lookup asks the details API by the provider's
transaction id, or ``queryPayOutResult`` by our tradeNo when there is none yet, and
applies the answer through the ledger's transitions. The sweeper republishes QUEUED
orders whose broker message was lost. Deadlines send stuck orders to REVIEW.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from worker.config import Settings
from worker.details import DetailsClient
from worker.exceptions import NotFound, ProviderError
from worker.ledger import Ledger, Order
from worker.ratelimit import RateLimiter, RateLimitTimeout
from worker.states import FINAL_STATES, State
from worker.vexora import VexoraClient

log = logging.getLogger(__name__)

PAGE = 500


@dataclass
class PassReport:
    """What one reconcile pass did; ``disburse reconcile`` prints it."""

    ran: bool = True
    stale_claims: int = 0
    lookups: int = 0
    swept: int = 0
    skipped_in_flight: int = 0

    def __str__(self) -> str:
        if not self.ran:
            return "another reconcile pass is running or ran moments ago: nothing done"
        return (
            f"lookups published: {self.lookups} (of which stale claims: {self.stale_claims}), "
            f"lost messages republished: {self.swept}, "
            f"already being looked up: {self.skipped_in_flight}"
        )


@dataclass(frozen=True)
class ProviderReport:
    """What the provider says about one payout."""

    state: State
    platform_trade_no: str | None
    status: str
    message: str


@dataclass
class LookupReport:
    moved: dict[str, int] = field(default_factory=dict)
    requeued: list[str] = field(default_factory=list)
    errors: int = 0
    leftover: list[str] = field(default_factory=list)

    def count(self, what: str) -> None:
        self.moved[what] = self.moved.get(what, 0) + 1


class Reconciler:
    def __init__(
        self,
        ledger: Ledger,
        vexora: VexoraClient,
        details: DetailsClient,
        limiter: RateLimiter,
        settings: Settings,
        *,
        publish_lookups: Callable[[Sequence[str]], object],
        publish_submissions: Callable[[Sequence[str]], object],
        submit_queue_length: Callable[[], int],
    ) -> None:
        self.ledger = ledger
        self.vexora = vexora
        self.details = details
        self.limiter = limiter
        self.settings = settings
        self.publish_lookups = publish_lookups
        self.publish_submissions = publish_submissions
        self.submit_queue_length = submit_queue_length

    @property
    def redis(self) -> redis.Redis:
        return self.ledger.redis

    def _key(self, name: str) -> str:
        return f"{self.ledger.prefix}:reconcile:{name}"

    # the pass -----------------------------------------------------------------
    def run_pass(self) -> PassReport:
        """One pass; does nothing when another pass holds the lock or ran moments ago."""
        every = self.settings.reconcile_every
        lock = self.redis.lock(self._key("lock"), timeout=max(60.0, every * 4), blocking=False)
        if not lock.acquire():
            return PassReport(ran=False)
        try:
            # A second beat started by mistake runs its passes right after the first's:
            # the gate turns those into no-ops.
            if not self.redis.set(self._key("gate"), "1", px=int(every * 800), nx=True):
                return PassReport(ran=False)
            report = PassReport()
            self._fan_out(report)
            self._sweep(report)
            return report
        finally:
            lock.release()

    def _fan_out(self, report: PassReport) -> None:
        now = self.ledger.now_ms()
        stale = self._all_oldest(State.SUBMITTING, self.settings.claim_lease, now)
        report.stale_claims = len(stale)
        pending = stale + [
            t
            for state in (State.UNKNOWN, State.PROCESSING)
            for t in self._all_oldest(state, self.settings.reconcile_after, now)
        ]
        fresh = self._mark_in_flight(pending)
        report.skipped_in_flight = len(pending) - len(fresh)
        report.lookups = len(fresh)
        self.publish_lookups(fresh)

    def _all_oldest(self, state: State, older_than: float, now_ms: int) -> list[str]:
        """Every order in ``state`` for ``older_than`` seconds, oldest first, read in pages."""
        found: list[str] = []
        while True:
            page = self.ledger.oldest(
                state, older_than=older_than, limit=PAGE, offset=len(found), now_ms=now_ms
            )
            found += [t for t, _ in page]
            if len(page) < PAGE:
                return found

    def _mark_in_flight(self, trade_nos: Sequence[str]) -> list[str]:
        """Keep the orders that have no lookup outstanding, marking them as having one."""
        ttl = int(max(self.settings.reconcile_every * 10, 600) * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for trade_no in trade_nos:
            pipe.set(self._key(f"inflight:{trade_no}"), "1", px=ttl, nx=True)
        return [t for t, ok in zip(trade_nos, pipe.execute(), strict=True) if ok]

    def _sweep(self, report: PassReport) -> None:
        """Republish QUEUED orders whose message was lost; the claim makes a copy harmless."""
        if self.submit_queue_length() > 0:
            return  # messages are still waiting: those orders are not lost, only queued
        now = self.ledger.now_ms()
        lost = self._all_oldest(State.QUEUED, self.settings.sweep_after, now)
        if not lost:
            return
        # Restart their clocks so the same orders are not republished on every pass.
        key = self.ledger.state_key(State.QUEUED)
        self.redis.zadd(key, dict.fromkeys(lost, now), xx=True)
        self.publish_submissions(lost)
        report.swept = len(lost)
        log.warning("republished %d QUEUED orders whose messages were lost", len(lost))

    # lookups -------------------------------------------------------------------
    def lookup_many(self, trade_nos: Sequence[str], budget: float) -> LookupReport:
        deadline = time.monotonic() + budget
        report = LookupReport()
        for index, trade_no in enumerate(trade_nos):
            try:
                self.limiter.acquire(timeout=max(0.0, deadline - time.monotonic()))
            except RateLimitTimeout:
                report.leftover = list(trade_nos[index:])
                break
            self._lookup_one(trade_no, report)
            self.redis.delete(self._key(f"inflight:{trade_no}"))
        if report.requeued:
            self.publish_submissions(report.requeued)
        return report

    def lookup(self, trade_no: str) -> LookupReport:
        """Ask the provider about one order now (used for a claim whose holder is gone)."""
        return self.lookup_many([trade_no], budget=self.settings.submit_budget)

    def _lookup_one(self, trade_no: str, report: LookupReport) -> None:
        order = self.ledger.get(trade_no)
        if order is None or order.state in FINAL_STATES:
            report.count("already final")
            return
        try:
            answer = self._ask_provider(order)
        except NotFound:
            self._not_found(order, report)
            return
        except ProviderError as exc:
            report.errors += 1
            log.warning("lookup failed: %s", type(exc).__name__, extra={"trade_no": trade_no})
            return
        result = self.ledger.transition(
            trade_no,
            answer.state,
            report=True,
            note="reconcile",
            platform_trade_no=answer.platform_trade_no,
            provider_status=answer.status,
            provider_message=answer.message,
        )
        report.count(f"{result.previous}->{answer.state}" if result.moved else result.outcome)
        if answer.state not in FINAL_STATES:
            self._check_deadline(order)

    def _ask_provider(self, order: Order) -> ProviderReport:
        if order.platform_trade_no:
            try:
                found = self.details.details(order.platform_trade_no)
            except NotFound:
                pass  # the details API may lag behind the payout API: ask by tradeNo
            else:
                if found.state is not None:
                    return ProviderReport(found.state, order.platform_trade_no, found.status, "")
        result = self.vexora.query(order.trade_no)
        return ProviderReport(result.state, result.platform_trade_no, result.status, result.message)

    def _not_found(self, order: Order, report: LookupReport) -> None:
        """The provider has no payout with this tradeNo.

        For an UNKNOWN order, or a claim whose holder is certainly gone, the POST never
        arrived: resubmit with the same tradeNo (a repeat would be refused, never paid).
        """
        if order.state not in (State.UNKNOWN, State.SUBMITTING):
            report.count("not found")
            return
        moved = self.ledger.transition(
            order.trade_no,
            State.QUEUED,
            expect=[State.UNKNOWN, State.SUBMITTING],
            note="provider has no record",
        )
        if moved.moved:
            report.requeued.append(order.trade_no)

    def _check_deadline(self, order: Order) -> None:
        age = (self.ledger.now_ms() - order.created_ms) / 1000
        if age > self.settings.review_after:
            self.ledger.transition(
                order.trade_no,
                State.REVIEW,
                reason=f"not final after {int(age)} s",
            )
