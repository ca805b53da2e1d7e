"""The reconcile beat task and the lookup task: thin; the work is in worker.reconcile."""

from __future__ import annotations

import logging

from worker import runtime
from worker.app import app
from worker.config import get_settings
from worker.publish import publish_lookups

log = logging.getLogger(__name__)


@app.task(name="disburse.reconcile")
def reconcile_pass() -> str:
    """One pass (beat runs it every RECONCILE_EVERY s); a no-op while another one runs."""
    return str(runtime.reconciler().run_pass())


# No retry on a Redis outage: an order whose lookup failed keeps its "lookup outstanding"
# marker only until it expires, and the next pass asks again.
@app.task(name="disburse.lookup")
def lookup_orders(trade_nos: list[str]) -> dict[str, int]:
    # Leased while this runs: an order put back to QUEUED is published when the lookups
    # are done; should the task die first, the pass publishes it once the lease expires.
    with runtime.leases().take(trade_nos) as lease:
        report = runtime.reconciler().lookup_many(trade_nos, budget=get_settings().submit_budget)
        lease.hand_on(report.requeued)  # published by lookup_many
        # Still marked as having a lookup outstanding: the pass leaves them to this message.
        publish_lookups(report.leftover)
    summary = report.as_dict()
    if report.errors or report.review or report.discrepancies:
        log.warning("lookups: %s", summary)
    return summary
