"""Failover drill (issue 24): the PostgreSQL primary, then the Redis master, lost
mid-batch, workers SIGKILLed meanwhile as in the chaos run; the engine must follow each
promoted server without a person and without a process exiting.

It runs a real cluster (celery workers and beat from the Procfile, the web
receiver, the sandbox over HTTP) whose only knowledge of the replication is its
environment: ``DATABASE_URL`` a multi-host URL (the standby listed first: every
connection asks for a writable server), ``REDIS_URL`` the three Sentinels and
``REDIS_SENTINEL_MASTER``. Mid-batch the primary is SIGKILLed and the standby promoted
(synchronous replication: no committed claim lost), then the Redis master SIGKILLed and
the Sentinels left to promote its replica (asynchronous: what it loses, the leases and
the sweeper bring back). One batch for both: one cluster to start and one recovery tail
to wait for (the claims of killed workers come back after their lease). Then: no
tradeNo accepted twice by the sandbox, every payout SUCCEEDED, FAILED or REVIEW as the
sandbox settled it, no process exited on its own.
For each failure it prints the seconds to the first claim committed after it and to the
first POST of a payout claimed after it (the sandbox's own receipt time).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import worker
from tests.support.cluster import EXPECTED_STATE, fast_sandbox, running_cluster
from tests.support.waiting import patiently, wait_for
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import SETTLED_STATES
from worker.dev.cluster import LocalCluster
from worker.dev.replicated import SENTINEL_MASTER, ReplicatedPostgres, ReplicatedRedis
from worker.ledger import Ledger

pytestmark = pytest.mark.integration

PAYOUTS = 400  # 20 s of POSTs at the rate below: both failovers land mid-batch
POSTGRES_FAILS_AFTER = 6.0  # seconds into the batch
REDIS_FAILS_AFTER = 12.0
KILL_EVERY = (2.0, 3.0)  # a worker SIGKILLed and started again, as in the chaos run
KILLING_FOR = 20.0
SETTLE_TIMEOUT = 120.0
# Timers scaled to the sandbox, which settles within a second (tests/chaos says why):
# a killed task's payouts come back after LEASE_TTL, a message the failover lost after
# SWEEP_AFTER, a claim whose answer was lost after the claim lease (the task time limit
# derived from the budgets and HTTP timeouts, plus margins) and, when the provider has
# no record of it, after two such answers NO_RECORD_GRACE apart.
ENV = {
    "VEXORA_RATE_LIMIT": "20/s",
    "HTTP_CONNECT_TIMEOUT": "1",
    "HTTP_READ_TIMEOUT": "1.5",
    "SUBMIT_BUDGET": "5",
    "LOOKUP_BUDGET": "5",
    "LEASE_TTL": "5",
    "SWEEP_AFTER": "10",
    "RECONCILE_EVERY": "3",
    "RECONCILE_AFTER": "3",
    "NO_RECORD_GRACE": "5",
    "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
}


def say(message: str) -> None:
    print(f"[failover] {message}", flush=True)


@contextmanager
def replicated_cluster() -> Iterator[tuple[ReplicatedPostgres, ReplicatedRedis, LocalCluster]]:
    with (
        ReplicatedPostgres(synchronous=True) as postgres,
        ReplicatedRedis() as redis_servers,
        running_cluster(
            database_url=postgres.url(),
            redis_url=redis_servers.url,
            workers=2,
            sandbox=fast_sandbox(),
            env=ENV,
        ) as cluster,
    ):
        yield postgres, redis_servers, cluster


class WorkerKiller(threading.Thread):
    """SIGKILLs a random worker every few seconds and starts it again; a worker found
    exited before its turn died on its own, which is recorded."""

    def __init__(self, cluster: LocalCluster, seconds: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.seconds = cluster, seconds
        self.rng = random.Random(24)
        self.kills = 0
        self.died: list[int | None] = []

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            time.sleep(self.rng.uniform(*KILL_EVERY))
            for index, process in enumerate(self.cluster.workers):
                if process is not None and process.poll() is not None:
                    self.died.append(process.returncode)
                    self.cluster.start_worker(index)
            index = self.rng.randrange(self.cluster.worker_count)
            self.cluster.kill_worker(index)
            self.cluster.start_worker(index)
            self.kills += 1


def test_failovers_of_postgresql_and_redis_mid_batch_pay_nothing_twice_and_lose_nothing() -> None:
    with replicated_cluster() as (postgres, redis_servers, cluster):
        ledger = runtime.ledger()
        result = worker.enqueue_batch("ID", sample_rows("ID", PAYOUTS))
        assert result.batch_id is not None and result.accepted == PAYOUTS
        started = time.monotonic()
        killer = WorkerKiller(cluster, KILLING_FOR)
        killer.start()
        time.sleep(POSTGRES_FAILS_AFTER)
        assert payout_requests(cluster) > 0, "the failure came before any POST"
        postgres_failed = time.time()
        postgres.fail_over()  # SIGKILL the primary, promote the standby
        say(f"PostgreSQL primary killed, standby promoted in {time.time() - postgres_failed:.2f} s")
        time.sleep(max(0.0, REDIS_FAILS_AFTER - (time.monotonic() - started)))
        redis_failed = time.time()
        redis_servers.wait_promoted(redis_servers.kill_master())
        promoted_in = time.time() - redis_failed
        say(f"Redis master killed, replica promoted by the Sentinels in {promoted_in:.2f} s")
        assert payout_requests(cluster) < PAYOUTS, "the batch was over before Redis failed"
        killer.join()
        wait_settled(ledger, result.batch_id)

        assert killer.kills >= 5 and killer.died == [], "a worker exited on its own"
        assert cluster.exited() == {}, "a process exited on its own"
        paid = cluster.sandbox.payouts()
        assert {t: r["accepted_count"] for t, r in paid.items() if r["accepted_count"] != 1} == {}
        assert cluster.sandbox.stats()["duplicate_payments"] == 0
        orders = [o for page in ledger.iter_batch(result.batch_id) for o in ledger.get_many(page)]
        assert len(orders) == PAYOUTS
        for order in orders:
            assert order is not None and order.state in SETTLED_STATES
            record = paid.get(order.trade_no)
            if record is not None and order.state in EXPECTED_STATE.values():
                assert order.state is EXPECTED_STATE[record["status"]], order.trade_no
        by_second = Counter(math.floor(r["received_at"] - postgres_failed) for r in paid.values())
        say(f"POSTs received by second from the PostgreSQL failure: {sorted(by_second.items())}")
        say(f"{len(paid)} of {PAYOUTS} paid once each, {killer.kills} worker kills")
        for what, failed_at in (("PostgreSQL", postgres_failed), ("Redis", redis_failed)):
            claim, post = patiently(lambda at=failed_at: resumed_after(ledger, paid, at))
            say(
                f"{what} failover: the first claim after it {claim:.2f} s, the first POST of "
                f"a payout claimed after it {post:.2f} s"
            )


def payout_requests(cluster: LocalCluster) -> int:
    return int(cluster.sandbox.stats()["payout_requests"])


def wait_settled(ledger: Ledger, batch_id: str) -> None:
    def settled() -> bool:
        summary = patiently(lambda: ledger.batch(batch_id))
        return summary is not None and summary.settled

    wait_for(
        "every payout final after the failover",
        settled,
        SETTLE_TIMEOUT,
        interval=0.5,
        seen=lambda: patiently(ledger.state_counts),
    )


def resumed_after(
    ledger: Ledger, paid: dict[str, dict[str, Any]], failed_at: float
) -> tuple[float, float]:
    """Seconds from the failure to the first claim committed after it (the ledger's
    clock), and to the provider's receipt of the first payout claimed after it: POSTs
    of payouts claimed before the failure may still arrive meanwhile."""
    with ledger.pool.connection() as conn:
        rows = conn.execute(
            "SELECT trade_no, min(at) FROM order_events WHERE to_state = 'SUBMITTING' "
            "GROUP BY trade_no HAVING min(at) > to_timestamp(%s)",
            (failed_at,),
        ).fetchall()
    claimed = {trade_no: at.timestamp() for trade_no, at in rows}
    first_claim = min(claimed.values())
    first_post = min(r["received_at"] for t, r in paid.items() if t in claimed)
    return first_claim - failed_at, first_post - failed_at
