"""The tasks are thin: what a submit task publishes for the orders its chunk left over."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from tasks.submit import submit_orders
from worker import runtime
from worker.retry import QUERY_DELAY
from worker.submit import ChunkReport


class ReportingSubmitter:
    def __init__(self, report: ChunkReport) -> None:
        self.report = report
        self.ran: list[list[str]] = []

    def run(self, trade_nos: list[str], budget: float) -> ChunkReport:
        self.ran.append(trade_nos)
        return self.report


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
    submissions = queued(broker, "submit")
    assert sorted(args for args, _ in submissions) == [[retry], [leftover]]
    assert {args[0]: eta is not None for args, eta in submissions} == {
        retry: True,  # after its backoff
        leftover: False,  # at once
    }
    ((lookup, eta),) = queued(broker, "reconcile")
    assert lookup == [unknown] and eta is not None  # after QUERY_DELAY
    assert QUERY_DELAY > 0
    # Marked as outstanding: the next reconcile pass (or anyone) does not ask again.
    assert runtime.reconciler().request_lookups([unknown]) == 0
    assert len(queued(broker, "reconcile")) == 1
