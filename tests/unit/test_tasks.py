"""The tasks are thin: what a submit task publishes for the orders its chunk left over,
and what it leaves leased (worker.leases) for the reconcile pass."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis
from celery.exceptions import Reject
from celery.signals import task_received

from tasks.reconcile import lookup_orders
from tasks.submit import submit_orders
from worker import runtime
from worker.config import get_settings
from worker.leases import Leases
from worker.reconcile import LookupReport
from worker.retry import QUERY_DELAY
from worker.submit import ChunkReport


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

    def run(self, trade_nos: list[str], budget: float) -> ChunkReport:
        self.ran.append(trade_nos)
        self.leased_while_running = set(leased())
        if isinstance(self.report, Exception):
            raise self.report
        return self.report


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


def test_submit_task_publishes_retries_leftovers_and_marked_lookups(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown, retry, leftover = "a" * 32, "b" * 32, "c" * 32
    stub = ReportingSubmitter(
        ChunkReport(retry=[(retry, 2.0)], query=[unknown], leftover=[leftover], done=4)
    )
    monkeypatch.setattr(runtime, "submitter", lambda: stub)

    assert submit_orders([unknown, retry, leftover]) == {"done": 4, "retry": 1, "query": 1}

    assert stub.ran == [[unknown, retry, leftover]]
    # Neither the rest of the chunk nor a retry waits behind a big batch still queued.
    assert queued(broker, "submit") == []
    etas = {tuple(args): eta for args, eta in queued(broker, "resubmit")}
    assert set(etas) == {(leftover,), (retry,)}
    assert etas[(leftover,)] is None  # at once
    assert etas[(retry,)] is not None  # after its backoff
    ((lookup, eta),) = queued(broker, "reconcile")
    assert lookup == [unknown] and eta is not None  # after QUERY_DELAY
    assert QUERY_DELAY > 0
    # Marked as outstanding: the next reconcile pass (or anyone) does not ask again.
    assert runtime.reconciler().request_lookups([unknown]) == 0
    assert len(queued(broker, "reconcile")) == 1


def test_submit_task_holds_its_orders_while_it_runs_and_hands_on_the_rest(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, retry, leftover = "a" * 32, "b" * 32, "c" * 32
    stub = ReportingSubmitter(ChunkReport(retry=[(retry, 60.0)], leftover=[leftover], done=1))
    monkeypatch.setattr(runtime, "submitter", lambda: stub)
    submit_orders([done, retry, leftover])
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
    now = runtime.ledger().now_ms()
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
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = ["a" * 32, "b" * 32]
    stub = ReportingSubmitter(redis.ConnectionError("Redis went away for good"))
    monkeypatch.setattr(runtime, "submitter", lambda: stub)
    with pytest.raises(redis.ConnectionError):
        submit_orders(chunk)
    assert set(leased()) == set(chunk)  # they expire, and the pass publishes them again
    assert queued(broker, "submit") == queued(broker, "resubmit") == []


def test_a_submit_task_that_cannot_record_its_lease_gives_its_message_back(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = ReportingSubmitter(ChunkReport())
    monkeypatch.setattr(runtime, "submitter", lambda: stub)

    def redis_away(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(Leases, "now_ms", redis_away)
    with pytest.raises(Reject) as rejected:
        submit_orders(["a" * 32])
    assert rejected.value.requeue is True
    assert stub.ran == []  # nothing was done


class FailingReconciler:
    def lookup_many(self, trade_nos: list[str], budget: float) -> None:
        raise redis.ConnectionError("Redis went away for good")


def test_a_lookup_task_that_dies_leaves_its_orders_to_the_reconcile_pass(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup puts orders the provider has no record of back to QUEUED and publishes
    them at its end: leased meanwhile, so none is stranded if it dies before that."""
    monkeypatch.setattr(runtime, "reconciler", FailingReconciler)
    with pytest.raises(redis.ConnectionError):
        lookup_orders(["a" * 32])
    assert list(leased()) == ["a" * 32]


class RequeuingReconciler:
    def lookup_many(self, trade_nos: list[str], budget: float) -> LookupReport:
        return LookupReport(requeued=trade_nos[:1])


def test_a_lookup_task_leaves_an_order_it_requeued_to_the_worker_that_gets_it(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "reconciler", RequeuingReconciler)
    lookup_orders(["a" * 32, "b" * 32])
    assert list(leased()) == ["a" * 32]
