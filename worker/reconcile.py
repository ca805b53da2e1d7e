"""Reconciliation: bring every pending payout to the state the provider knows.

A pass (Celery beat; a Redis lock with an owner token plus a short gate make a second
beat, or a pass that outlasts its interval, change nothing) reads the pending orders
oldest first, in pages, from the ledger's state indexes: PROCESSING and UNKNOWN older
than ``RECONCILE_AFTER``, and SUBMITTING orders whose claim outlived any worker. It
marks each one "lookup outstanding" and publishes them as lookup tasks; an order
with a lookup outstanding is not published again, so no order is looked up twice in
one pass, however many beats run.

Each lookup takes a slot of the cluster-wide ``DETAILS_RATE_LIMIT`` per provider
call, asks the details API by the provider's transaction id (``queryPayOutResult``
by our tradeNo when there is none, or the details API does not know it) and applies
the answer through the ledger's transitions:

=====================================  =============================================
success / 0000                         SUCCEEDED
failed / 00029                         FAILED
pending / 0015                         PROCESSING (stays)
no record, UNKNOWN or stale claim      asked again; no record again NO_RECORD_GRACE s
                                       later: QUEUED and resubmitted with the same
                                       tradeNo (REVIEW after MAX_NO_RECORD_RESUBMITS)
no record, anything else               unchanged (asked again on the next pass)
contradicts a final state              discrepancy recorded; the final state stays
error, no token, 429, out of budget    unchanged (asked again later)
=====================================  =============================================

An order still pending ``REVIEW_AFTER`` seconds after it was first sent goes to
REVIEW with its reason. The sweeper republishes QUEUED orders whose submit task died
(their lease expired: worker.leases), whatever the length of the submit queues, and,
once the queues are empty, QUEUED orders whose broker message was lost; the claim
makes a duplicate harmless.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from worker.config import Settings
from worker.details import DetailsClient
from worker.exceptions import AuthenticationFailed, NotFound, ProviderError, RateLimited
from worker.leases import Leases
from worker.ledger import Ledger, Order
from worker.pause import PauseSwitch
from worker.ratelimit import RateLimiter, RateLimitTimeout
from worker.retry import MAX_NO_RECORD_RESUBMITS, NO_RECORD_GRACE
from worker.states import FINAL_STATES, PENDING_STATES, Outcome, State
from worker.token import TokenUnavailable
from worker.vexora import ProviderReport, VexoraClient

log = logging.getLogger(__name__)

PAGE = 500  # index entries read per round trip
# After the details API could not be used (no token, or our credentials refused), no
# process tries it again for this long: lookups must not hammer the token endpoint.
DETAILS_HOLD = 5.0
# Orders published per pass, by the state they were found in, in this order.
_KINDS = (State.SUBMITTING, State.UNKNOWN, State.PROCESSING)


@dataclass
class PassReport:
    """What one reconcile pass did; ``disburse reconcile`` prints it."""

    ran: bool = True
    why_not: str = ""
    # Orders sent to lookup, by the state they were in (SUBMITTING: an expired claim).
    published: dict[State, int] = field(default_factory=dict)
    skipped_in_flight: int = 0
    abandoned: int = 0  # QUEUED orders whose submit task died, published again
    swept: int = 0
    sweep_skipped: str = ""

    @property
    def lookups(self) -> int:
        return sum(self.published.values())

    @property
    def stale_claims(self) -> int:
        return self.published.get(State.SUBMITTING, 0)

    def __str__(self) -> str:
        if not self.ran:
            return f"reconcile pass not run: {self.why_not}; nothing changed"
        lines = ["reconcile pass:"]
        if self.lookups:
            kinds = ", ".join(
                f"{self.published[s]} {_KIND_NAMES[s]}" for s in _KINDS if self.published.get(s)
            )
            lines.append(
                f"  {self.lookups} orders sent to lookup ({kinds}); "
                "the workers apply the provider's answers"
            )
        else:
            lines.append("  no pending order is due for a lookup")
        if self.skipped_in_flight:
            lines.append(f"  {self.skipped_in_flight} orders skipped: a lookup is already queued")
        if self.abandoned:
            lines.append(f"  {self.abandoned} QUEUED orders republished (their submit task died)")
        if self.swept:
            lines.append(f"  {self.swept} QUEUED orders republished (their messages were lost)")
        elif self.sweep_skipped:
            lines.append(f"  sweeper: {self.sweep_skipped}")
        else:
            lines.append("  no lost QUEUED order to republish")
        return "\n".join(lines)


_KIND_NAMES = {
    State.SUBMITTING: "SUBMITTING with an expired claim",
    State.UNKNOWN: "UNKNOWN",
    State.PROCESSING: "PROCESSING",
}


@dataclass
class LookupReport:
    """What one batch of lookups did; the lookup task publishes ``leftover`` again."""

    moved: dict[str, int] = field(default_factory=dict)  # "PROCESSING->SUCCEEDED": n, ...
    requeued: list[str] = field(default_factory=list)  # back to QUEUED: resubmit these
    review: list[str] = field(default_factory=list)  # moved to REVIEW past their deadline
    discrepancies: int = 0  # answers contradicting a final state
    errors: int = 0  # provider errors, 429s, no token: asked again on a later pass
    deferred: int = 0  # not asked (details API on hold): asked again on a later pass
    leftover: list[str] = field(default_factory=list)  # the rate-limit wait outlasted the budget

    def count(self, what: str) -> None:
        self.moved[what] = self.moved.get(what, 0) + 1

    def as_dict(self) -> dict[str, int]:
        return {
            **self.moved,
            "requeued": len(self.requeued),
            "review": len(self.review),
            "discrepancies": self.discrepancies,
            "errors": self.errors,
            "deferred": self.deferred,
            "leftover": len(self.leftover),
        }


class PublishLookups(Protocol):
    def __call__(self, trade_nos: Sequence[str], *, countdown: float | None = None) -> object: ...


class _DetailsDown(Exception):
    """The details API cannot be used now (no token; credentials refused)."""


class Reconciler:
    def __init__(
        self,
        ledger: Ledger,
        vexora: Callable[[str], VexoraClient],
        details: DetailsClient,
        limiter: RateLimiter,
        settings: Settings,
        *,
        publish_lookups: PublishLookups,
        publish_submissions: Callable[[Sequence[str]], object],
        submit_queue_length: Callable[[], int],
    ) -> None:
        self.ledger = ledger
        self.vexora = vexora  # market -> the payout API client of its provider account
        self.details = details
        self.limiter = limiter
        self.settings = settings
        self.publish_lookups = publish_lookups
        self.publish_submissions = publish_submissions
        self.submit_queue_length = submit_queue_length
        self.pause = PauseSwitch(ledger.redis, prefix=ledger.prefix)
        self.leases = Leases(ledger.redis, prefix=ledger.prefix)

    @property
    def redis(self) -> redis.Redis:
        return self.ledger.redis

    def _key(self, name: str) -> str:
        return f"{self.ledger.prefix}:reconcile:{name}"

    def _in_flight_key(self, trade_no: str) -> str:
        return self._key(f"inflight:{trade_no}")

    # the pass -----------------------------------------------------------------
    def run_pass(self) -> PassReport:
        """One pass; does nothing when another pass holds the lock or ran moments ago."""
        every = self.settings.reconcile_every
        # A pass takes well under a second, a few with 100,000 orders pending; the lock
        # of one killed halfway holds the next ones off for an interval at most.
        lock = Lock(
            self.redis,
            self._key("lock"),
            timeout=max(10.0, every),
            blocking=False,
            thread_local=False,
        )
        if not lock.acquire(blocking=False):
            return PassReport(ran=False, why_not="another reconcile pass is running")
        try:
            # A second beat started by mistake sends its passes between the first's: the
            # gate (most of an interval) turns them into no-ops.
            if not self.redis.set(self._key("gate"), "1", px=max(1, int(every * 800)), nx=True):
                return PassReport(ran=False, why_not=f"a pass ran less than {every * 0.8:g} s ago")
            report = PassReport()
            self._fan_out(report)
            self._sweep(report)
            log.info("%s", report)
            return report
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("reconcile lock expired before the pass ended")

    def _fan_out(self, report: PassReport) -> None:
        now = self.ledger.now_ms()
        found: list[tuple[int, str, State]] = []
        for state in _KINDS:
            older_than = (
                self.settings.claim_lease
                if state is State.SUBMITTING
                else self.settings.reconcile_after
            )
            found += [(ms, t, state) for t, ms in self._scan(state, older_than, now)]
        found.sort()  # oldest first, whatever the state
        fresh = set(self._mark_in_flight([t for _, t, _ in found], backlog=len(found)))
        published = [t for _, t, _ in found if t in fresh]
        for _, trade_no, state in found:
            if trade_no in fresh:
                report.published[state] = report.published.get(state, 0) + 1
        report.skipped_in_flight = len(found) - len(published)
        self._publish_marked(published)

    def _scan(self, state: State, older_than: float, now_ms: int) -> list[tuple[str, int]]:
        """Every (tradeNo, entered ms) in ``state`` for ``older_than`` s, oldest first.

        Read in pages keyed by score (not by offset), so orders that leave the index
        while it is read do not make the scan skip others.
        """
        key = self.ledger.state_key(state)
        cutoff = now_ms - int(older_than * 1000)
        found: list[tuple[str, int]] = []
        seen: set[str] = set()
        low: float | str = "-inf"
        tie = 0  # members already read whose score equals ``low``
        while True:
            rows: list[tuple[str, float]] = self.redis.zrangebyscore(  # type: ignore[assignment]
                key, low, cutoff, start=tie, num=PAGE, withscores=True
            )
            for member, score in rows:
                if member not in seen:
                    seen.add(member)
                    found.append((str(member), int(score)))
            if len(rows) < PAGE:
                return found
            last = rows[-1][1]
            at_last = sum(1 for _, score in rows if score == last)
            tie = tie + at_last if last == low else at_last
            low = last

    def _in_flight_ttl(self, backlog: int) -> int:
        """Milliseconds a lookup may stay outstanding before it is taken as lost.

        Waiting in the queue is covered by twice the time to drain ``backlog``, running by
        the task time limit (Celery kills it then). Past both, its message died with a
        worker; a second lookup is harmless, as transitions are idempotent.
        """
        drain = backlog / self.limiter.rate.per_second
        seconds = max(self.settings.task_time_limit, self.settings.reconcile_every * 3, 2 * drain)
        return math.ceil(seconds * 1000)

    def _mark_in_flight(self, trade_nos: Sequence[str], backlog: int | None = None) -> list[str]:
        """Keep the orders that have no lookup outstanding, marking them as having one."""
        if not trade_nos:
            return []
        ttl = self._in_flight_ttl(len(trade_nos) if backlog is None else backlog)
        pipe = self.redis.pipeline(transaction=False)
        for trade_no in trade_nos:
            pipe.set(self._in_flight_key(trade_no), "1", px=ttl, nx=True)
        return [t for t, ok in zip(trade_nos, pipe.execute(), strict=True) if ok]

    def _clear_in_flight(self, trade_nos: Sequence[str]) -> None:
        if trade_nos:
            self.redis.delete(*[self._in_flight_key(t) for t in trade_nos])

    def _publish_marked(self, trade_nos: Sequence[str], countdown: float | None = None) -> None:
        if not trade_nos:
            return
        try:
            if countdown is None:
                self.publish_lookups(trade_nos)
            else:
                self.publish_lookups(trade_nos, countdown=countdown)
        except BaseException:
            # Not published: free them for the next pass instead of for the marker's TTL.
            self._clear_in_flight(trade_nos)
            raise

    def request_lookups(self, trade_nos: Sequence[str], *, countdown: float | None = None) -> int:
        """Publish lookups (after ``countdown`` s) of the orders that have none outstanding.

        For callers outside a pass (a submit whose outcome is unknown, a webhook that
        cannot be trusted): the pass then skips these orders until they are answered.
        Returns how many were published.
        """
        fresh = self._mark_in_flight(trade_nos)
        self._publish_marked(fresh, countdown)
        return len(fresh)

    def _sweep(self, report: PassReport) -> None:
        """Republish QUEUED orders whose task died or whose message was lost; the claim
        makes a copy harmless."""
        if self.pause.reason() is not None:
            report.sweep_skipped = "submissions are paused; QUEUED orders wait for resume"
            return
        self._republish_abandoned(report)
        try:
            waiting = self.submit_queue_length()
        except Exception as exc:
            log.warning("sweeper skipped: submit queue length unknown (%s)", type(exc).__name__)
            report.sweep_skipped = f"submit queue length unknown ({type(exc).__name__})"
            return
        if waiting > 0:
            # Messages are still waiting: those orders are not lost, only queued.
            report.sweep_skipped = "the submit queue is not empty"
            return
        now = self.ledger.now_ms()
        lost = [t for t, _ in self._scan(State.QUEUED, self.settings.sweep_after, now)]
        if not lost:
            return
        # Restart their clocks so the same orders are not republished on every pass
        # (``xx``: an order claimed meanwhile is not put back in the index).
        key = self.ledger.state_key(State.QUEUED)
        for start in range(0, len(lost), PAGE):
            self.redis.zadd(key, dict.fromkeys(lost[start : start + PAGE], now), xx=True)
        self.publish_submissions(lost)
        report.swept = len(lost)
        log.warning("republished %d QUEUED orders whose messages were lost", len(lost))

    def _republish_abandoned(self, report: PassReport) -> None:
        """Publish again the QUEUED orders whose task stopped renewing its lease.

        However long the submit queues are: the broker would give a dead worker's
        message back only after its visibility timeout. Orders claimed or final since
        are left alone. The leases are dropped only once published: a pass that dies
        halfway leaves them to the next one.
        """
        now = self.ledger.now_ms()
        expired = self.leases.expired(now)
        queued: list[str] = []
        for start in range(0, len(expired), PAGE):
            orders = self.ledger.get_many(expired[start : start + PAGE])
            queued += [o.trade_no for o in orders if o and o.state is State.QUEUED]
        if queued:
            self.publish_submissions(queued)
            report.abandoned = len(queued)
            log.warning("republished %d QUEUED orders whose submit task died", len(queued))
        self.leases.forget_expired(now)

    # lookups -------------------------------------------------------------------
    def lookup_many(
        self, trade_nos: Sequence[str], budget: float, *, clear_in_flight: bool = True
    ) -> LookupReport:
        """Ask the provider about each order in turn, within ``budget`` seconds of waiting.

        Orders the rate limit cannot fit in the budget come back in ``leftover`` (still
        marked as having a lookup outstanding); every other order's marker is cleared,
        so the next pass takes up again whatever is still pending.
        """
        deadline = time.monotonic() + budget
        report = LookupReport()
        for index, trade_no in enumerate(trade_nos):
            try:
                self._lookup_one(trade_no, report, deadline)
            except RateLimitTimeout:
                report.leftover = list(trade_nos[index:])
                break
            if clear_in_flight:
                self._clear_in_flight([trade_no])
        if report.requeued:
            self.publish_submissions(report.requeued)
        return report

    def lookup(self, trade_no: str) -> LookupReport:
        """Ask the provider about one order now (used for a claim whose holder is gone).

        Leaves a pass's "lookup outstanding" marker alone: that lookup clears it.
        """
        return self.lookup_many(
            [trade_no], budget=self.settings.submit_budget, clear_in_flight=False
        )

    def _lookup_one(self, trade_no: str, report: LookupReport, deadline: float) -> None:
        order = self.ledger.get(trade_no)
        if order is None:
            report.count("missing")
            return
        if order.state not in PENDING_STATES:
            report.count(f"already {order.state}")
            return
        if order.state is State.SUBMITTING and not self._claim_expired(trade_no):
            # Claimed again since the pass saw it: that worker is sending it now.
            report.count("claim is live")
            return
        try:
            answer = self._ask_provider(order, deadline)
        except RateLimitTimeout:
            raise
        except NotFound:
            self._not_found(order, report)
            return
        except _DetailsDown as exc:
            report.deferred += 1
            self._leave(order, report, f"no details API: {exc}")
            return
        except (ProviderError, TokenUnavailable) as exc:
            report.errors += 1
            if isinstance(exc, RateLimited):
                self.limiter.penalize(exc.retry_after or 1.0)
            log.warning("lookup failed: %s", type(exc).__name__, extra={"trade_no": trade_no})
            self._leave(order, report, f"lookup failed: {type(exc).__name__}")
            return
        outcome = self.ledger.apply_report(trade_no, answer, source="lookup")
        if outcome is Outcome.MOVED:
            report.count(f"{order.state}->{answer.state}")
        elif outcome is Outcome.DISCREPANCY:
            report.discrepancies += 1
            log.error(
                "provider says %s but the order is final in another state: discrepancy recorded",
                answer.state,
                extra={"trade_no": trade_no},
            )
            return
        else:
            report.count(f"{outcome} {order.state}")
        if answer.state not in FINAL_STATES and outcome in (Outcome.MOVED, Outcome.SAME):
            self._leave(order, report, f"provider says {answer.status or answer.state}")

    def _slot(self, deadline: float) -> None:
        """One slot of the shared details/query budget; RateLimitTimeout past the deadline."""
        self.limiter.acquire(timeout=max(0.0, deadline - time.monotonic()))

    def _ask_provider(self, order: Order, deadline: float) -> ProviderReport:
        if order.platform_trade_no:
            held = self.redis.get(self._key("details-hold"))
            if held is not None:
                raise _DetailsDown(str(held))
            try:
                found = self.details.details(
                    order.platform_trade_no, throttle=lambda: self._slot(deadline)
                )
            except NotFound:
                pass  # the details API may lag behind the payout API: ask by tradeNo
            except (TokenUnavailable, AuthenticationFailed) as exc:
                # Every other lookup would fail the same way: hold the details API for a
                # moment, cluster-wide, so nobody asks for a token in a tight loop.
                why = type(exc).__name__
                self.redis.set(self._key("details-hold"), why, px=int(DETAILS_HOLD * 1000))
                log.warning("details API unavailable (%s); holding it %gs", why, DETAILS_HOLD)
                raise
            else:
                if found.state is not None:
                    return ProviderReport(found.state, order.platform_trade_no, found.status, "")
        self._slot(deadline)
        result = self.vexora(order.market).query(order.trade_no)
        return result.report

    def _not_found(self, order: Order, report: LookupReport) -> None:
        """The provider answered without a record of a payout with this tradeNo.

        An order with a provider id was accepted once: it stays as it is. For one whose
        POST may have arrived or not (UNKNOWN, or a claim whose holder is certainly gone),
        a single such answer is not believed, as the request may still be on its way at
        the provider: the first is noted on the order; one at least ``NO_RECORD_GRACE``
        seconds later resubmits it with the same tradeNo (a repeat would be refused,
        never paid); after ``MAX_NO_RECORD_RESUBMITS`` such rounds it goes to REVIEW.
        Lookups that failed (transport, 5xx, 429) never get here: they count for nothing.
        """
        if order.state not in (State.UNKNOWN, State.SUBMITTING) or order.platform_trade_no:
            report.count(f"not found, {order.state} unchanged")
            self._leave(order, report, "provider has no record")
            return
        if order.state is State.SUBMITTING and not self._claim_expired(order.trade_no):
            report.count("claim is live")
            return
        now = self.ledger.now_ms()
        if order.unseen_ms is None or now - order.unseen_ms < NO_RECORD_GRACE * 1000:
            if order.unseen_ms is None:
                self.ledger.note_unseen(order, now)
            report.count(f"not found, {order.state} asked again later")
            self._leave(order, report, "provider has no record")
            return
        if order.resubmits >= MAX_NO_RECORD_RESUBMITS:
            target, why = (
                State.REVIEW,
                f"provider has no record after {order.resubmits} resubmissions",
            )
        else:
            target, why = State.QUEUED, "provider has no record"
        # Only from the state this lookup saw: an order requeued and claimed again by
        # someone else meanwhile (a fresh SUBMITTING) is not pulled back.
        moved = self.ledger.transition(
            order.trade_no,
            target,
            expect=[order.state],
            note=why,
            reason=why if target is State.REVIEW else None,
            resubmits=order.resubmits + 1 if target is State.QUEUED else None,
        )
        if not moved.moved:
            report.count(f"{moved.outcome} {moved.previous}")
        elif target is State.QUEUED:
            report.requeued.append(order.trade_no)
            report.count(f"{order.state}->QUEUED")
        else:
            report.review.append(order.trade_no)
            log.warning("%s: moved to REVIEW", why, extra={"trade_no": order.trade_no})

    def _claim_expired(self, trade_no: str) -> bool:
        """True when the order's SUBMITTING claim is older than any worker can live."""
        claimed = self.ledger.entered_ms(trade_no, State.SUBMITTING)
        if claimed is None:
            return False
        return self.ledger.now_ms() - claimed > self.settings.claim_lease * 1000

    def _leave(self, order: Order, report: LookupReport, why: str) -> None:
        """The order stays pending: past its deadline it goes to REVIEW, with ``why``."""
        now = self.ledger.now_ms()
        limit_ms = self.settings.review_after * 1000
        if now - order.created_ms <= limit_ms:
            return  # cheap: not even created that long ago
        sent = self._first_sent_ms(order)
        if now - sent <= limit_ms:
            return  # e.g. held for approval for days, sent recently
        age = int((now - sent) / 1000)
        result = self.ledger.transition(
            order.trade_no,
            State.REVIEW,
            expect=PENDING_STATES,
            note="deadline",
            reason=f"not final after {age}s: {why}",
        )
        if result.moved:
            report.review.append(order.trade_no)
            log.warning(
                "not final %d s after it was sent (%s): moved to REVIEW",
                age,
                why,
                extra={"trade_no": order.trade_no},
            )

    def _first_sent_ms(self, order: Order) -> int:
        """When the order was first claimed for sending (its creation, if never)."""
        for ms, entry in self.ledger.history(order.trade_no):
            if entry.split(" ", 1)[0] == State.SUBMITTING:
                return ms
        return order.created_ms
