"""Liveness under the faults of issue 11: a worker killed while a big batch is queued,
and Redis restarted mid-batch. Real Redis, sandbox, celery workers and beat."""

from __future__ import annotations

import time
from typing import Any

import pytest

import worker
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_for, wait_settled
from worker.celery import runtime
from worker.celery.app import app
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.cluster import LocalCluster
from worker.ledger import Ledger

pytestmark = pytest.mark.integration


def enqueue(market: str, n: int) -> str:
    result = worker.enqueue_batch(market, sample_rows(market, n))
    assert result.rejected == [] and result.batch_id is not None
    return result.batch_id


def active_submissions(hostname: str) -> list[str]:
    """tradeNos of the submit tasks this worker is running now."""
    replies = app.control.inspect([hostname], timeout=2.0).active() or {}
    return [
        trade_no
        for task in replies.get(hostname, [])
        if task["name"] == "disburse.submit"
        for trade_no in task["args"][0]
    ]


def states(ledger: Ledger, trade_nos: list[str]) -> dict[str, State]:
    return {o.trade_no: o.state for o in ledger.get_many(trade_nos) if o is not None}


def assert_never_paid_twice(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    paid = cluster.sandbox.payouts()
    assert [t for t, r in paid.items() if r["accepted_count"] != 1] == []
    assert cluster.sandbox.stats()["duplicate_payments"] == 0
    return paid


def test_a_killed_workers_payouts_are_taken_up_while_a_big_batch_is_queued(
    cluster_factory: Any,
) -> None:
    """Its messages come back from the broker only after the visibility timeout, and the
    sweeper waits for empty queues: the orders' expired leases bring them back."""
    # LEASE_TTL 5 s instead of 15: the stranded orders come back 10 s sooner, still with
    # two renewals (every 5/3 s) a live task may miss before its lease expires.
    env = {"VEXORA_RATE_LIMIT": "20/s", "LEASE_TTL": "5"}
    with cluster_factory(workers=2, sandbox=fast_sandbox(), env=env) as cluster:
        ledger = runtime.ledger()
        enqueue("ID", 3000)  # 150 s of work at 20/s: the queue stays long throughout
        hostname = f"w0@{app.control.ping(timeout=1.0)[0].popitem()[0].split('@', 1)[1]}"
        deadline = time.monotonic() + 60
        held: list[str] = []
        while not held and time.monotonic() < deadline:
            held = active_submissions(hostname)
        assert held, "worker 0 never ran a submit task"
        # Into the chunk: some of it claimed and sent, the rest still QUEUED.
        wait_for(
            "a payout of worker 0's chunk claimed",
            lambda: set(states(ledger, held).values()) != {State.QUEUED},
            timeout=30,
            interval=0.05,
        )
        cluster.kill_worker(0)
        cluster.start_worker(0)
        stranded = [t for t, s in states(ledger, held).items() if s is State.QUEUED]
        assert stranded, "the killed worker had sent its whole chunk"

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert runtime.publisher().submit_queue_length() > 0, (
                "the batch ran out before the killed worker's payouts were taken up: "
                f"{sum(s is State.QUEUED for s in states(ledger, stranded).values())} "
                f"of {len(stranded)} still QUEUED"
            )
            if State.QUEUED not in states(ledger, stranded).values():
                break
            time.sleep(0.5)
        else:
            pytest.fail("the killed worker's payouts were not taken up")

        paid = assert_never_paid_twice(cluster)
        # Sent once each: the broker never gave the dead worker's messages back (nor did
        # anything else send them a second time).
        assert all(paid[t]["post_count"] == 1 for t in stranded if t in paid)


def test_workers_survive_a_redis_restart_mid_batch_and_lose_nothing(
    cluster_factory: Any,
) -> None:
    with cluster_factory(
        workers=2,
        appendonly=True,
        sandbox=fast_sandbox(),
        env={"VEXORA_RATE_LIMIT": "20/s"},
    ) as cluster:
        ledger = runtime.ledger()
        batches = [enqueue(market, 100) for market in ("ID", "AR", "JP")]
        deadline = time.monotonic() + 30
        while ledger.state_counts().get(State.QUEUED, 0) > 250 and time.monotonic() < deadline:
            time.sleep(0.2)
        cluster.restart_redis(down_for=5.0)  # mid-batch: tasks are running

        batches.append(enqueue("KH", 20))  # consumed after the restart too
        wait_settled(ledger, batches, timeout=240)
        assert cluster.exited() == {}, "processes exited on the Redis restart"
        assert_never_paid_twice(cluster)
