"""The reconcile beat task, the claim check and the lookup task: thin; the work is in
worker.flows.reconcile (the pass, the check) and worker.flows.lookup (the lookups)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from worker.celery import runtime
from worker.celery.app import app
from worker.coordination.inflight import InFlightLookups
from worker.coordination.leases import Leases
from worker.coordination.metrics import Metrics
from worker.core.config import get_settings
from worker.core.queues import CLAIM_CHECK_TASK, LOOKUP_TASK, RECONCILE_TASK
from worker.flows.reads import LookupReport

log = logging.getLogger(__name__)


class LooksUp(Protocol):
    """Lookups (worker.flows.lookup)."""

    def run(self, trade_nos: Sequence[str], budget: float) -> LookupReport: ...


@app.task(name=RECONCILE_TASK)
def reconcile_pass() -> str:
    """One pass (beat runs it every RECONCILE_EVERY s); a no-op while another one runs."""
    try:
        return str(runtime.reconciler().run_pass())
    finally:
        runtime.metrics().flush()  # e.g. the list rows a walk skipped


@app.task(name=CLAIM_CHECK_TASK)
def check_claims() -> dict[str, int]:
    """Look up the claims abandoned since the last check (beat runs it every
    CLAIM_CHECK_EVERY s): a few here and now, the rest by other processes; and publish
    again the unclaimed orders of submit tasks that died, unless submissions are paused."""
    found = runtime.reconciler().check()
    if not found:
        return {}
    return lookup_orders(found)


# No retry on a Redis outage: an order whose lookup failed keeps its "lookup outstanding"
# marker only until it expires, and the next pass asks again.
@app.task(name=LOOKUP_TASK)
def lookup_orders(trade_nos: list[str]) -> dict[str, int]:
    return lookup_chunk(
        trade_nos,
        runtime.lookups(),
        runtime.leases(),
        runtime.in_flight(),
        runtime.metrics(),
        budget=get_settings().lookup_budget,
    )


def lookup_chunk(
    trade_nos: list[str],
    lookups: LooksUp,
    leases: Leases,
    in_flight: InFlightLookups,
    metrics: Metrics,
    *,
    budget: float,
) -> dict[str, int]:
    """The lookup task's work, its dependencies passed in."""
    # Leased while this runs: an order put back to QUEUED is published when the lookups
    # are done; should the task die first, the pass publishes it once the lease expires.
    try:
        with leases.take(trade_nos) as lease:
            report = lookups.run(trade_nos, budget=budget)
            lease.hand_on(report.requeued)  # published by the lookups
            # Still marked as having a lookup outstanding: the pass leaves them to this message.
            in_flight.publish_marked(report.leftover)
    finally:
        metrics.flush()  # e.g. a token refresh, counted by the details client
    summary = report.as_dict()
    if report.errors or report.review or report.discrepancies:
        log.warning("lookups: %s", summary)
    return summary
