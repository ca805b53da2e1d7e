"""The application endpoint's breaker: it judges the failure *rate* of recent attempts,
so an endpoint that is alive but flaky keeps getting its events, and a dead one gets
one request at a time.

Closed, it keeps the outcomes of the last :data:`OUTBOX_WINDOW` seconds (at least the
last :data:`OUTBOX_WINDOW_LEAST`, however old); once it holds that many and
:data:`OUTBOX_TRIP_RATE` of them failed, it opens. Open, the endpoint gets one request at a
time (a probe), the first after a second, then each failed probe doubling the wait up to
:data:`OUTBOX_PROBE_CAP`; a success (a probe's, or an earlier request's answered late)
closes it, with an empty window. No I/O: the sender keeps its open state in
``outbox_state`` (:class:`~worker.outbox.deliveries.Endpoint`) for the next run.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from worker.core.backoff import backoff
from worker.core.defaults import (
    OUTBOX_PROBE_CAP,
    OUTBOX_STRUGGLING_RATE,
    OUTBOX_TRIP_RATE,
    OUTBOX_WINDOW,
    OUTBOX_WINDOW_LEAST,
)
from worker.outbox.deliveries import Endpoint


class Change(Enum):
    """How an attempt changed the endpoint's state (to be saved, and said in the log)."""

    TRIPPED = "tripped"
    PROBE_FAILED = "probe failed"
    CLOSED = "closed"


class Breaker:
    """Closed: judges the failure rate over a window; open: one probe at a time."""

    def __init__(
        self,
        endpoint: Endpoint | None = None,
        *,
        window: float = OUTBOX_WINDOW,
        least: int = OUTBOX_WINDOW_LEAST,
        trip_rate: float = OUTBOX_TRIP_RATE,
        probe_cap: float = OUTBOX_PROBE_CAP,
    ) -> None:
        self.window = window
        self.least = least
        self.trip_rate = trip_rate
        self.probe_cap = probe_cap
        self.endpoint = endpoint or Endpoint()
        self._outcomes: deque[tuple[float, bool]] = deque()  # (Unix seconds, failed)
        self._failed = 0  # of _outcomes

    @property
    def open(self) -> bool:
        return self.endpoint.open

    def failure_rate(self, now: float) -> float | None:
        """The failed share of the window's attempts; None while it holds too few."""
        self._forget(now)
        if len(self._outcomes) < self.least:
            return None
        return self._failed / len(self._outcomes)

    def struggling(self, now: float) -> bool:
        """Most recent attempts failed: the endpoint is failing more than it answers."""
        rate = self.failure_rate(now)
        return rate is not None and rate >= OUTBOX_STRUGGLING_RATE

    def may_probe(self, now: float, in_flight: int) -> bool:
        """Open: a probe may go now (nothing else in flight, its wait over)."""
        assert self.endpoint.retry_at is not None
        return in_flight == 0 and now >= self.endpoint.retry_at

    def record(self, ok: bool, now: float, *, probe: bool = False) -> Change | None:
        """One attempt's outcome (``probe``: sent while open); how it changed the
        endpoint's state, if it did."""
        if self.open:
            if ok:
                self.endpoint = Endpoint()
                return Change.CLOSED
            if not probe:
                return None  # sent before it tripped: the wait is the probes'
            failed = self.endpoint.probes_failed + 1
            self.endpoint = Endpoint(failed, now + self._wait(failed + 1))
            return Change.PROBE_FAILED
        self._outcomes.append((now, not ok))
        self._failed += not ok
        rate = self.failure_rate(now)
        if rate is None or rate < self.trip_rate:
            return None
        self.endpoint = Endpoint(0, now + self._wait(1))
        self._outcomes.clear()
        self._failed = 0
        return Change.TRIPPED

    def _wait(self, probe: int) -> float:
        return backoff(probe, cap=self.probe_cap)

    def _forget(self, now: float) -> None:
        while len(self._outcomes) > self.least and self._outcomes[0][0] < now - self.window:
            _, failed = self._outcomes.popleft()
            self._failed -= failed
