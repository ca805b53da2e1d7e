"""The tasks are thin: what a submit task publishes for the orders its chunk left over,
and what it leaves leased (worker.coordination.leases) for the reconcile pass, also when PostgreSQL
goes away in the middle."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
import redis
from celery.exceptions import Reject
from celery.signals import task_received
from redis.backoff import NoBackoff
from redis.retry import Retry

import worker.celery.signals  # noqa: F401 - connects the hookup under test (task_received)
from schemas import Payout
from tasks.reconcile import lookup_chunk
from tasks.submit import submit_chunk
from worker.celery import runtime
from worker.coordination.leases import Leases
from worker.coordination.metrics import Metrics
from worker.coordination.pause import PauseSwitch
from worker.coordination.ratelimit import RateLimiter
from worker.core.config import get_settings
from worker.core.settings import Rate
from worker.core.states import State
from worker.db import migrate
from worker.db.pool import open_pool
from worker.dev.postgres_server import PostgresServer
from worker.dev.redis_server import free_port
from worker.flows.reads import LookupReport
from worker.flows.submit import ChunkReport, Submitter
from worker.ledger import Ledger, new_batch_id
from worker.provider.answers import PayoutResult


@dataclass
class Received:
    """What the task_received signal hands over (a celery Request), as far as used."""

    name: str
    args: list[list[str]]
    eta: str | None


class ReportingSubmitter:
    def __init__(self, report: ChunkReport | Exception) -> None:
        self.report = report
        self.ran: list[list[str]] = []
        self.leased_while_running: set[str] = set()

    def run(self, trade_nos: Sequence[str], budget: float) -> ChunkReport:
        self.ran.append(list(trade_nos))
        self.leased_while_running = set(leased())
        if isinstance(self.report, Exception):
            raise self.report
        return self.report


def submit_orders(trade_nos: list[str], submitter: ReportingSubmitter) -> dict[str, int]:
    """The submit task, with ``submitter`` and the runtime's other pieces."""
    return submit_chunk(
        trade_nos,
        submitter,
        runtime.leases(),
        runtime.in_flight(),
        budget=get_settings().submit_budget,
        query_delay=get_settings().query_delay,
    )


def leased() -> dict[str, int]:
    client = runtime.redis_client()
    key = Leases(client, prefix=get_settings().key_prefix).key
    return {str(t): int(s) for t, s in client.zrange(key, 0, -1, withscores=True)}


def queued(broker: redis.Redis, queue: str) -> list[tuple[list[str], str | None]]:
    """(tradeNos, eta) of every message waiting in ``queue``."""
    found = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        found.append((args[0], message["headers"].get("eta")))
    return found


def test_submit_task_publishes_retries_leftovers_and_marked_lookups(broker: redis.Redis) -> None:
    unknown, retry, leftover = "a" * 32, "b" * 32, "c" * 32
    stub = ReportingSubmitter(
        ChunkReport(retry=[(retry, 2.0)], query=[unknown], leftover=[leftover], done=4)
    )

    assert submit_orders([unknown, retry, leftover], stub) == {"done": 4, "retry": 1, "query": 1}

    assert stub.ran == [[unknown, retry, leftover]]
    # Neither the rest of the chunk nor a retry waits behind a big batch still queued.
    assert queued(broker, "submit") == []
    etas = {tuple(args): eta for args, eta in queued(broker, "resubmit")}
    assert set(etas) == {(leftover,), (retry,)}
    assert etas[(leftover,)] is None  # at once
    assert etas[(retry,)] is not None  # after its backoff
    ((lookup, eta),) = queued(broker, "reconcile")
    assert lookup == [unknown] and eta is not None  # after the query delay
    # Marked as outstanding: the next reconcile pass (or anyone) does not ask again.
    assert runtime.in_flight().request_lookups([unknown]) == 0
    assert len(queued(broker, "reconcile")) == 1


def test_submit_task_holds_its_orders_while_it_runs_and_hands_on_the_rest(
    broker: redis.Redis,
) -> None:
    done, retry, leftover = "a" * 32, "b" * 32, "c" * 32
    stub = ReportingSubmitter(ChunkReport(retry=[(retry, 60.0)], leftover=[leftover], done=1))
    submit_orders([done, retry, leftover], stub)
    assert stub.leased_while_running == {done, retry, leftover}
    # Claimed: given up. In a message again: left to the worker that receives it, the
    # retry until its countdown is over.
    now = runtime.ledger().now_ms()
    held = leased()
    assert set(held) == {retry, leftover}
    assert now < held[leftover] <= now + 20_000
    assert now + 60_000 < held[retry] <= now + 80_000


def test_a_worker_leases_a_submit_message_as_soon_as_it_receives_it(broker: redis.Redis) -> None:
    due = datetime.now(UTC) + timedelta(seconds=60)
    now = runtime.leases().now_ms()
    task_received.send(sender=None, request=Received("disburse.submit", [["a" * 32]], None))
    task_received.send(
        sender=None, request=Received("disburse.submit", [["b" * 32]], due.isoformat())
    )
    task_received.send(sender=None, request=Received("disburse.lookup", [["c" * 32]], None))
    held = leased()
    assert set(held) == {"a" * 32, "b" * 32}
    assert now < held["a" * 32] <= now + 20_000
    assert now + 60_000 < held["b" * 32] <= now + 80_000  # due in 60 s: then the TTL


def test_a_failed_submit_task_leaves_its_orders_to_the_reconcile_pass(
    broker: redis.Redis,
) -> None:
    chunk = ["a" * 32, "b" * 32]
    stub = ReportingSubmitter(redis.ConnectionError("Redis went away for good"))
    with pytest.raises(redis.ConnectionError):
        submit_orders(chunk, stub)
    assert set(leased()) == set(chunk)  # they expire, and the pass publishes them again
    assert queued(broker, "submit") == queued(broker, "resubmit") == []


def test_a_submit_task_that_cannot_record_its_lease_gives_its_message_back(
    broker: redis.Redis,
) -> None:
    stub = ReportingSubmitter(ChunkReport())
    away = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    with pytest.raises(Reject) as rejected:
        submit_chunk(
            ["a" * 32],
            stub,
            Leases(away),
            runtime.in_flight(),
            budget=get_settings().submit_budget,
            query_delay=get_settings().query_delay,
        )
    assert rejected.value.requeue is True
    assert stub.ran == []  # nothing was done


class FailingLookups:
    def run(self, trade_nos: Sequence[str], budget: float) -> LookupReport:
        raise redis.ConnectionError("Redis went away for good")


def test_a_lookup_task_that_dies_leaves_its_orders_to_the_reconcile_pass(
    broker: redis.Redis,
) -> None:
    """A lookup puts orders the provider has no record of back to QUEUED and publishes
    them at its end: leased meanwhile, so none is stranded if it dies before that."""
    with pytest.raises(redis.ConnectionError):
        lookup_chunk(
            ["a" * 32],
            FailingLookups(),
            runtime.leases(),
            runtime.in_flight(),
            runtime.metrics(),
            budget=5,
        )
    assert list(leased()) == ["a" * 32]


class ReportingLookups:
    def __init__(self, report: LookupReport) -> None:
        self.report = report
        self.ran: list[list[str]] = []

    def run(self, trade_nos: Sequence[str], budget: float) -> LookupReport:
        self.ran.append(list(trade_nos))
        return self.report


def test_lookup_task_hands_on_what_its_budget_left_and_flushes_the_metrics(
    broker: redis.Redis,
) -> None:
    done, left = "a" * 32, "b" * 32
    in_flight = runtime.in_flight()
    assert in_flight.mark([done, left]) == [done, left]
    # The process's Metrics batches what it records (a token refresh, say).
    metrics = Metrics(runtime.redis_client(), prefix=get_settings().key_prefix, flush_every=3600)
    metrics.token_refresh()
    stub = ReportingLookups(LookupReport(moved={"PROCESSING->SUCCEEDED": 1}, leftover=[left]))

    summary = lookup_chunk([done, left], stub, runtime.leases(), in_flight, metrics, budget=5)

    assert stub.ran == [[done, left]]
    assert summary["leftover"] == 1 and summary["PROCESSING->SUCCEEDED"] == 1
    ((lookup, eta),) = queued(broker, "reconcile")
    assert lookup == [left] and eta is None
    assert in_flight.request_lookups([left]) == 0  # still marked: its message is out
    assert metrics.snapshot() == {"token_refresh": "1"}


def test_a_lookup_task_leaves_an_order_it_requeued_to_the_worker_that_gets_it(
    broker: redis.Redis,
) -> None:
    stub = ReportingLookups(LookupReport(requeued=["a" * 32]))
    lookup_chunk(
        ["a" * 32, "b" * 32],
        stub,
        runtime.leases(),
        runtime.in_flight(),
        runtime.metrics(),
        budget=5,
    )
    assert list(leased()) == ["a" * 32]


# --- PostgreSQL away in the middle of a submit task -------------------------------------


class Provider:
    """Accepts every payout; ``on_post`` runs as each POST is made."""

    def __init__(self, on_post: Callable[[], object] = list) -> None:
        self.on_post = on_post
        self.posts: list[str] = []

    def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult:
        self.posts.append(trade_no)
        self.on_post()
        return PayoutResult(trade_no, "P-" + trade_no[:6], "0015", "", State.PROCESSING, None)


def submitter_on(ledger: Ledger, provider: Provider) -> Submitter:
    client = runtime.redis_client()
    return Submitter(
        ledger,
        provider,
        RateLimiter(client, "submit", Rate(1000), prefix=get_settings().key_prefix),
        PauseSwitch(client, prefix=get_settings().key_prefix),
        claim_lease=60.0,
        recover=list,
    )


def new_orders(ledger: Ledger, n: int) -> list[str]:
    fields = {"amount": "100000", "bankAccountNo": "5464438554636", "bankCode": "0002"}
    payouts = [Payout("ID", "IDR", Decimal(100000), None, fields) for _ in range(n)]
    return [t for t, _ in ledger.create_orders(payouts, batch_id=new_batch_id(), market="ID")]


def test_a_submit_task_that_cannot_reach_postgresql_leaves_its_orders_leased(
    broker: redis.Redis, ledger: Ledger
) -> None:
    chunk = new_orders(ledger, 3)
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/ledger"
    provider = Provider()
    with open_pool(nobody, timeout=0.5) as down, pytest.raises(psycopg.OperationalError):
        submit_chunk(
            chunk,
            submitter_on(Ledger(down), provider),
            runtime.leases(),
            runtime.in_flight(),
            budget=5,
            query_delay=5.0,
        )
    assert provider.posts == []
    # Leased until they expire; then the reconcile pass publishes them again.
    assert set(leased()) == set(chunk)
    assert {o.state for o in ledger.get_many(chunk) if o} == {State.QUEUED}


def reconnected(ledger: Ledger, within: float = 15.0) -> None:
    """Until the ledger's pool has a working connection again: after failed attempts it
    retries with a backoff, longer than one checkout's timeout on a loaded machine."""
    deadline = time.monotonic() + within
    while True:
        try:
            ledger.ping()
            return
        except psycopg.OperationalError:  # PoolTimeout too
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_submit_task_losing_postgresql_after_a_post_leaves_a_claim_to_recover(
    broker: redis.Redis,
) -> None:
    """PostgreSQL restarts between the POST and the record of its answer: the task fails,
    the order it sent stays claimed (its claim lease, then a lookup, recover it), the
    rest of its chunk stays QUEUED and leased, and the pool reconnects afterwards."""
    with PostgresServer(durable=False) as server:
        migrate.upgrade(server.url)
        with open_pool(server.url, timeout=1.0) as pool:
            ledger = Ledger(pool)
            sent, *rest = chunk = new_orders(ledger, 3)
            provider = Provider(on_post=server.stop)
            with pytest.raises(psycopg.OperationalError):
                submit_chunk(
                    chunk,
                    submitter_on(ledger, provider),
                    runtime.leases(),
                    runtime.in_flight(),
                    budget=5,
                    query_delay=5.0,
                )
            server.start()
            reconnected(ledger)
            assert provider.posts == [sent]
            assert set(leased()) == set(chunk)
            orders = {o.trade_no: o for o in ledger.get_many(chunk) if o}
            assert (orders[sent].state, orders[sent].attempts) == (State.SUBMITTING, 1)
            assert {orders[t].state for t in rest} == {State.QUEUED}
            assert ledger.first_claimed_ms(sent) is not None
