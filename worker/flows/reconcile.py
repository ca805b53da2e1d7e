"""The reconcile pass: every pending payout is looked up, no QUEUED payout is lost.

A pass (Celery beat; a Redis lock with an owner token plus a short gate make a second
beat, or a pass that outlasts its interval, change nothing) reads the pending orders
oldest first, in pages, from the ledger (its index of open orders): PROCESSING and
UNKNOWN older than ``RECONCILE_AFTER``, SUBMITTING orders whose claim is abandoned (its
lease expired: worker.flows.heartbeat), and SUCCEEDED orders someone reported failed,
for the details API to confirm or not (``Ledger.rechecks``). It
publishes them as lookup tasks (worker.flows.lookup) through the in-flight markers
(worker.coordination.inflight): an order with a lookup outstanding is not published again, so no
order is looked up twice at once, however many beats run. When at least
``RECONCILE_WALK_AT`` orders are due, the pass first walks the provider's paged list
(worker.flows.walk, 25 orders a request), and publishes lookups only of the orders the list
did not show. Between passes, a frequent check (:meth:`Reconciler.abandoned_claims`, every
CLAIM_CHECK_EVERY) takes up abandoned claims within seconds of their lease's end.

The sweeper republishes QUEUED orders whose submit task died (their lease expired:
worker.coordination.leases), whatever the length of the submit queues, and, once the queues are
empty, QUEUED orders older than ``SWEEP_AFTER`` (their broker message was lost); the
claim makes a duplicate harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from worker.coordination.inflight import InFlightLookups
from worker.coordination.leases import Leases
from worker.coordination.pause import PauseSwitch
from worker.core import keys
from worker.core.defaults import CLAIM_LOOKUP_CHUNK, RECONCILE_PAGE
from worker.core.settings import Settings
from worker.core.states import State
from worker.flows import retention
from worker.flows.walk import ListWalk, WalkReport
from worker.ledger import Ledger

log = logging.getLogger(__name__)

# Orders published per pass, by the state they were found in, in this order.
_KINDS = (State.SUBMITTING, State.UNKNOWN, State.PROCESSING)
_REPORTED = (*_KINDS, State.SUCCEEDED)  # and SUCCEEDED orders reported failed


@dataclass
class PassReport:
    """What one reconcile pass did; ``disburse reconcile`` prints it."""

    ran: bool = True
    why_not: str = ""
    # Orders sent to lookup, by the state they were in (SUBMITTING: an expired claim;
    # SUCCEEDED: reported failed).
    published: dict[State, int] = field(default_factory=dict)
    skipped_in_flight: int = 0
    abandoned: int = 0  # QUEUED orders whose submit task died, published again
    swept: int = 0
    sweep_skipped: str = ""
    walk: WalkReport | None = None  # the list walk, when the pass chose one

    @property
    def lookups(self) -> int:
        return sum(self.published.values())

    def __str__(self) -> str:
        if not self.ran:
            return f"reconcile pass not run: {self.why_not}; nothing changed"
        lines = ["reconcile pass:"]
        if self.walk is not None:
            lines.append(f"  {self.walk}")
        if self.lookups:
            kinds = ", ".join(
                f"{self.published[s]} {_KIND_NAMES[s]}" for s in _REPORTED if self.published.get(s)
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
    State.SUCCEEDED: "SUCCEEDED reported failed (a reversal?)",
}


class Reconciler:
    """The reconcile pass: pending orders -> lookups; the sweeper; the lease sweep."""

    def __init__(
        self,
        ledger: Ledger,
        in_flight: InFlightLookups,
        pause: PauseSwitch,
        leases: Leases,
        client: redis.Redis,
        settings: Settings,
        *,
        publish_submissions: Callable[[Sequence[str]], object],
        submit_queue_length: Callable[[], int],
        walk: ListWalk | None = None,
    ) -> None:
        self.ledger = ledger
        self.in_flight = in_flight
        self.pause = pause  # the cluster-wide switch: the sweeper waits while it is on
        self.leases = leases
        self.redis = client  # the pass's lock and gate
        self.settings = settings
        self.publish_submissions = publish_submissions
        self.submit_queue_length = submit_queue_length
        self.walk = walk  # None: single lookups only

    def _key(self, name: str) -> str:
        return keys.reconcile(self.settings.key_prefix, name)

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
            self._fan_out(report, lock)
            self.sweep(report)
            retention.erase_expired(self.ledger, self.settings.failed_payload_retention)
            log.info("%s", report)
            return report
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("reconcile lock expired before the pass ended")

    def _fan_out(self, report: PassReport, lock: Lock) -> None:
        now = self.ledger.now_ms()
        lease, after = self.settings.claim_lease, self.settings.reconcile_after
        found = [
            (ms, t, State.SUBMITTING) for t, ms in self.ledger.abandoned_claims(lease, now_ms=now)
        ]
        for state in (State.UNKNOWN, State.PROCESSING):
            found += [
                (ms, t, state) for t, ms in self.ledger.scan(state, older_than=after, now_ms=now)
            ]
        found += [(ms, t, State.SUCCEEDED) for t, ms in self.ledger.rechecks()]
        found.sort()  # oldest first, whatever the state
        walk_at = self.settings.reconcile_walk_at
        if self.walk is not None and 0 < walk_at <= len(found):
            report.walk = self._walk(found, lock)
            shown = {*report.walk.matched, *report.walk.waiting}
            found = [item for item in found if item[1] not in shown]
        fresh = set(self.in_flight.mark([t for _, t, _ in found], backlog=len(found)))
        published = [t for _, t, _ in found if t in fresh]
        for _, trade_no, state in found:
            if trade_no in fresh:
                report.published[state] = report.published.get(state, 0) + 1
        report.skipped_in_flight = len(found) - len(published)
        self.in_flight.publish_marked(published)

    # the claim check ------------------------------------------------------------
    def check(self) -> list[str]:
        """The claim check (beat, every CLAIM_CHECK_EVERY s): publish again the unclaimed
        orders of submit tasks that died, unless submissions are paused, and return
        :meth:`abandoned_claims` to look up now."""
        if self.pause.reason() is None:
            self.republish_abandoned()
        return self.abandoned_claims()

    def abandoned_claims(self) -> list[str]:
        """The claims abandoned long enough for a lookup to decide them (their lease
        expired ``abandoned_claim_grace`` ago: worker.flows.lookup), marked as having a
        lookup outstanding: the first CLAIM_LOOKUP_CHUNK are returned for the caller to
        look up now, the rest published as lookup tasks of that many each, so that a
        whole worker's claims are asked about by several processes at once. A frequent
        check (CLAIM_CHECK_EVERY) finds a killed worker's claims within seconds, where a
        pass comes every RECONCILE_EVERY. One indexed query; an order with a lookup
        outstanding already is left to it."""
        settings = self.settings
        decided_from = self.ledger.now_ms() - int(settings.abandoned_claim_grace * 1000)
        found = [
            t for t, _ in self.ledger.abandoned_claims(settings.claim_lease, now_ms=decided_from)
        ]
        marked = self.in_flight.mark(found, backlog=len(found)) if found else []
        here, rest = marked[:CLAIM_LOOKUP_CHUNK], marked[CLAIM_LOOKUP_CHUNK:]
        for start in range(0, len(rest), CLAIM_LOOKUP_CHUNK):
            self.in_flight.publish_marked(rest[start : start + CLAIM_LOOKUP_CHUNK])
        return here

    def _walk(self, found: list[tuple[int, str, State]], lock: Lock) -> WalkReport:
        assert self.walk is not None
        orders = []
        trade_nos = [t for _, t, _ in found]
        for start in range(0, len(trade_nos), RECONCILE_PAGE):
            orders += [
                o for o in self.ledger.get_many(trade_nos[start : start + RECONCILE_PAGE]) if o
            ]

        def keep_lock() -> bool:
            try:
                lock.reacquire()  # the lock's full timeout again, from now
            except LockError:
                return False
            return True

        return self.walk.run(orders, keep_lock)

    def sweep(self, report: PassReport) -> None:
        """Republish QUEUED orders whose task died or whose message was lost; the claim
        makes a copy harmless."""
        self.pause.refresh()  # the pause cache follows PostgreSQL, whatever Redis missed
        if self.pause.reason() is not None:
            report.sweep_skipped = "submissions are paused; QUEUED orders wait for resume"
            return
        report.abandoned = self.republish_abandoned()
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
        found = [
            t
            for t, _ in self.ledger.scan(
                State.QUEUED, older_than=self.settings.sweep_after, now_ms=now
            )
        ]
        # Restart their clocks so the same orders are not republished on every pass; an
        # order claimed meanwhile is left out.
        lost: list[str] = []
        for start in range(0, len(found), RECONCILE_PAGE):
            lost += self.ledger.restart_queued(found[start : start + RECONCILE_PAGE])
        if not lost:
            return
        self.publish_submissions(lost)
        report.swept = len(lost)
        log.warning("republished %d QUEUED orders whose messages were lost", len(lost))

    def republish_abandoned(self) -> int:
        """Publish again the QUEUED orders whose task stopped renewing its lease; how many.

        However long the submit queues are: the broker would give a dead worker's
        message back only after its visibility timeout. Orders claimed or final since
        are left alone. The leases are dropped only once published: a pass that dies
        halfway leaves them to the next one. The pass and the claim check both run it
        (a dead worker's unclaimed orders then come back with its claims, within
        seconds of its leases expiring); an order published by both is claimed once.
        """
        now = self.leases.now_ms()  # leases run on the Redis server's clock
        expired = self.leases.expired(now)
        queued: list[str] = []
        for start in range(0, len(expired), RECONCILE_PAGE):
            orders = self.ledger.get_many(expired[start : start + RECONCILE_PAGE])
            queued += [o.trade_no for o in orders if o and o.state is State.QUEUED]
        if queued:
            self.publish_submissions(queued)
            log.warning("republished %d QUEUED orders whose submit task died", len(queued))
        self.leases.forget_expired(now)
        return len(queued)
