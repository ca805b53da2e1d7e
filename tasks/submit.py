"""The submit task: thin; the work is in worker.flows.submit, the lease in
worker.coordination.leases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis
from celery.exceptions import Reject

from worker.celery import runtime
from worker.celery.app import app
from worker.coordination.inflight import InFlightLookups
from worker.coordination.leases import Leases
from worker.core.config import get_settings
from worker.core.queues import SUBMIT_TASK
from worker.flows.submit import ChunkReport


class Submits(Protocol):
    """A Submitter, or MarketSubmitters (worker.flows.market_submitters)."""

    def run(self, trade_nos: Sequence[str], budget: float) -> ChunkReport: ...


@app.task(name=SUBMIT_TASK)
def submit_orders(trade_nos: list[str]) -> dict[str, int]:
    return submit_chunk(
        trade_nos,
        runtime.submitter(),
        runtime.leases(),
        runtime.in_flight(),
        budget=get_settings().submit_budget,
        query_delay=get_settings().query_delay,
    )


def submit_chunk(
    trade_nos: list[str],
    submitter: Submits,
    leases: Leases,
    in_flight: InFlightLookups,
    *,
    budget: float,
    query_delay: float,
) -> dict[str, int]:
    """The submit task's work, its dependencies passed in."""
    try:
        lease = leases.take(trade_nos)
    except redis.RedisError as exc:
        # Nothing done, and nothing says this task has the orders: the message goes back
        # to its queue (if Redis is still away, the broker redelivers it after the
        # visibility timeout).
        raise Reject(exc, requeue=True) from exc
    # Leased while this runs: if the task dies or fails, the orders it has not handed on
    # are published again by the reconcile pass once the lease expires.
    with lease:
        report = submitter.run(trade_nos, budget=budget)
        runtime.publisher().resubmissions(report.leftover)
        lease.hand_on(report.leftover)
        for trade_no, delay in report.retry:
            runtime.publisher().resubmissions([trade_no], countdown=delay)
            lease.hand_on([trade_no], due_in=delay)
        # Marked as outstanding, so a reconcile pass does not ask twice.
        in_flight.request_lookups(report.query, countdown=query_delay)
    return {"done": report.done, "retry": len(report.retry), "query": len(report.query)}
