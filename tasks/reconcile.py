"""The reconcile beat task and the lookup task: thin; the work is in worker.reconcile."""

from __future__ import annotations

import redis

from worker import runtime
from worker.app import app
from worker.config import get_settings
from worker.publish import publish_lookups


@app.task(name="disburse.reconcile")
def reconcile_pass() -> str:
    return str(runtime.reconciler().run_pass())


@app.task(
    name="disburse.lookup",
    autoretry_for=(redis.ConnectionError, redis.TimeoutError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=10,
)
def lookup_orders(trade_nos: list[str]) -> dict[str, int]:
    report = runtime.reconciler().lookup_many(trade_nos, budget=get_settings().submit_budget)
    publish_lookups(report.leftover)
    return {"errors": report.errors, "requeued": len(report.requeued), **report.moved}
