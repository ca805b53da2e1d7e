"""The claim heartbeat: a process keeps the claims it holds alive in the ledger.

A claim (QUEUED -> SUBMITTING) is leased in PostgreSQL until ``claim_expires_at``
(migration 0011), LEASE_TTL seconds from the claim. While a process holds claims (from
its claim until their outcome is recorded or the claim given back, including a POST
still running after its task ended), one daemon thread of the process renews them all
every third of the TTL, in one statement. A process that dies (SIGKILL, out of memory,
its machine gone) stops renewing, and within LEASE_TTL seconds its claims are
abandoned: a frequent check hands them to the lookups (worker.flows.reconcile,
worker.flows.lookup), which settle them or resubmit them with the same tradeNo.

Two renewals may be missed (a starved thread, PostgreSQL away for a few seconds) before
a live claim expires. A renewal that fails is logged and tried again at the next tick:
the thread never dies of it. A live claim taken for abandoned (its renewals kept
failing) is still safe: the provider refuses a repeated tradeNo, so a resubmission
cannot pay twice (docs/failures.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)


class ClaimRenewals(Protocol):
    """What the heartbeat asks of the ledger (worker.ledger.Ledger.renew_claims)."""

    def renew_claims(self, trade_nos: Sequence[str]) -> int: ...


class ClaimHeartbeat:
    """The claims one process holds, leased for ``ttl`` seconds and renewed every third
    of that by a daemon thread started at the first :meth:`hold` (in the process that
    holds them: a Celery prefork child builds its own after the fork)."""

    def __init__(self, ledger: ClaimRenewals, *, ttl: float) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self.every = ttl / 3
        # tradeNo -> holds not yet dropped: an order given back and claimed again by
        # another thread of this process before the first drop stays held.
        self._held: Counter[str] = Counter()
        # tradeNo -> time.monotonic() at which its lease was last set, at the latest.
        self._leased: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, trade_nos: Sequence[str]) -> None:
        """Keep these claims alive (just claimed) until each is dropped once."""
        if not trade_nos:
            return
        now = time.monotonic()  # just after the claim that leased them
        with self._lock:
            self._held.update(trade_nos)
            self._leased.update(dict.fromkeys(trade_nos, now))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat, name="claim-heartbeat", daemon=True
                )
                self._thread.start()

    def drop(self, trade_nos: Sequence[str]) -> None:
        """Stop renewing these claims (the outcome is recorded, or the claim given back):
        each drop matches one hold. The lease already granted still runs out."""
        with self._lock:
            for trade_no in trade_nos:
                if self._held[trade_no] > 1:
                    self._held[trade_no] -= 1
                else:
                    del self._held[trade_no]
                    self._leased.pop(trade_no, None)

    def alive(self, trade_no: str) -> bool:
        """Whether the claim is held and its lease has at least a tick left for certain:
        a POST is started only then (worker.flows.submit), so that none starts after the
        lease ran out, when a lookup may take the claim for abandoned (worker.flows.lookup
        counts on it). False once two renewals in a row failed."""
        with self._lock:
            leased = self._leased.get(trade_no)
        return leased is not None and time.monotonic() - leased < self.ttl - self.every

    def held(self) -> list[str]:
        """The claims renewed at the next tick."""
        with self._lock:
            return list(self._held)

    def renew(self) -> None:
        """Renew every held claim now, in one statement; a failure is logged, not raised
        (the next tick tries again, two ticks before a lease can expire)."""
        held = self.held()
        if not held:
            return
        started = time.monotonic()  # the leases run from later than this
        try:
            self.ledger.renew_claims(held)
        except Exception as exc:  # the thread must outlive any failure: it is the lease
            log.warning(
                "claim heartbeat: %d claims not renewed (%s); trying again in %g s",
                len(held),
                type(exc).__name__,
                self.every,
            )
            return
        with self._lock:
            for trade_no in held:
                if trade_no in self._leased:
                    self._leased[trade_no] = max(self._leased[trade_no], started)

    def stop(self) -> None:
        """End the thread (tests; a worker's thread ends with its process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self.renew()
