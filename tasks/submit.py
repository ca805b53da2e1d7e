"""The submit task: thin; the work is in worker.submit."""

from __future__ import annotations

from worker import runtime
from worker.app import app
from worker.config import get_settings
from worker.publish import publish_submissions
from worker.retry import QUERY_DELAY, REDIS_OUTAGE_RETRY


@app.task(
    name="disburse.submit",
    **REDIS_OUTAGE_RETRY,
)
def submit_orders(trade_nos: list[str]) -> dict[str, int]:
    report = runtime.submitter().run(trade_nos, budget=get_settings().submit_budget)
    publish_submissions(report.leftover)
    for trade_no, delay in report.retry:
        publish_submissions([trade_no], countdown=delay)
    # Through the reconciler: marked as outstanding, so a pass does not ask twice.
    runtime.reconciler().request_lookups(report.query, countdown=QUERY_DELAY)
    return {"done": report.done, "retry": len(report.retry), "query": len(report.query)}
