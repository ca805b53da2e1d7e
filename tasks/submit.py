"""The submit task: thin; the work is in worker.submit, the lease in worker.leases."""

from __future__ import annotations

import redis
from celery.exceptions import Reject

from worker import runtime
from worker.app import app
from worker.config import get_settings
from worker.publish import publish_resubmissions
from worker.retry import QUERY_DELAY


@app.task(name="disburse.submit")
def submit_orders(trade_nos: list[str]) -> dict[str, int]:
    try:
        lease = runtime.leases().take(trade_nos)
    except redis.RedisError as exc:
        # Nothing done, and nothing says this task has the orders: the message goes back
        # to its queue (if Redis is still away, the broker redelivers it after the
        # visibility timeout).
        raise Reject(exc, requeue=True) from exc
    # Leased while this runs: if the task dies or fails, the orders it has not handed on
    # are published again by the reconcile pass once the lease expires.
    with lease:
        report = runtime.submitter().run(trade_nos, budget=get_settings().submit_budget)
        publish_resubmissions(report.leftover)
        lease.hand_on(report.leftover)
        for trade_no, delay in report.retry:
            publish_resubmissions([trade_no], countdown=delay)
            lease.hand_on([trade_no], due_in=delay)
        # Through the reconciler: marked as outstanding, so a pass does not ask twice.
        runtime.reconciler().request_lookups(report.query, countdown=QUERY_DELAY)
    return {"done": report.done, "retry": len(report.retry), "query": len(report.query)}
