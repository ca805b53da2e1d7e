"""Messages to the workers, through a real Redis broker: chunked, tradeNos only."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from worker.celery import runtime
from worker.celery.publish import UrgentFirst
from worker.core.defaults import RESUBMIT_CHUNK, SUBMIT_CHUNK
from worker.dev.redis_server import free_port


def test_a_queue_the_broker_never_had_is_empty(broker: redis.Redis) -> None:
    assert not broker.exists("submit")  # Redis has no such list: a passive declare fails
    assert runtime.publisher().submit_queue_length() == 0


def test_submissions_go_out_a_chunk_per_message(broker: redis.Redis) -> None:
    trade_nos = [f"{i:032x}" for i in range(SUBMIT_CHUNK * 2 + 1)]
    assert runtime.publisher().submissions(trade_nos) == 3
    assert runtime.publisher().submit_queue_length() == 3
    messages = [json.loads(raw) for raw in broker.lrange("submit", 0, -1)]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    sent = sorted(t for args, _, _ in bodies for t in args[0])
    assert sent == trade_nos
    assert all(m["headers"]["task"] == "disburse.submit" for m in messages)


def test_submissions_whose_pipeline_fails_go_again_one_by_one(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[int] = []
    execute = redis.client.Pipeline.execute

    def fail_once(self: redis.client.Pipeline, *args: object, **kwargs: object) -> object:
        commands = [command[0][0] for command in self.command_stack]
        if not failures and "LPUSH" in commands:
            failures.append(len(commands))
            raise redis.ConnectionError("the broker went away")
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", fail_once)
    trade_nos = [f"{i:032x}" for i in range(SUBMIT_CHUNK * 2 + 1)]
    assert runtime.publisher().submissions(trade_nos) == 3
    assert failures == [6]  # the three messages and their task-sent events, in one pipeline
    messages = [json.loads(raw) for raw in broker.lrange("submit", 0, -1)]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    assert sorted(t for args, _, _ in bodies for t in args[0]) == trade_nos


def test_the_queue_length_of_an_unreachable_broker_is_an_error(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    runtime.reset()
    with pytest.raises(Exception, match=r"(?i)connect|refused"):
        runtime.publisher().submit_queue_length()


def test_resubmissions_go_to_their_own_queue_and_count_as_waiting(broker: redis.Redis) -> None:
    assert runtime.publisher().submissions(["a" * 32]) == 1
    again = [f"{i:032x}" for i in range(RESUBMIT_CHUNK + 1)]
    assert runtime.publisher().resubmissions(again, countdown=5) == 2
    assert broker.llen("submit") == 1 and broker.llen("resubmit") == 2
    messages = [json.loads(raw) for raw in broker.lrange("resubmit", 0, -1)]
    assert all(m["headers"]["task"] == "disburse.submit" for m in messages)
    assert all(m["headers"]["eta"] is not None for m in messages)
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    assert sorted(t for args, _, _ in bodies for t in args[0]) == again
    assert runtime.publisher().submit_queue_length() == 3


def test_a_worker_waits_on_passes_and_webhooks_first_then_resubmit_then_submit() -> None:
    cycle = UrgentFirst()
    cycle.update(["submit", "resubmit", "reconcile", "outbox"])
    assert cycle.consume(4) == ["reconcile", "outbox", "resubmit", "submit"]
    cycle.rotate("reconcile")  # a pass came from reconcile: outbox is next in turn
    assert cycle.consume(4) == ["outbox", "reconcile", "resubmit", "submit"]
    cycle.rotate("submit")
    assert cycle.consume(4)[2:] == ["resubmit", "submit"]
