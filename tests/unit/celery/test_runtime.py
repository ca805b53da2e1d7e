"""The process-wide objects (worker.celery.runtime): one PostgreSQL pool per process, never
shared with a forked child (Celery's prefork pool), closed by ``reset``."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import redis
from requests.adapters import HTTPAdapter

from worker.celery import runtime
from worker.flows.submit import Submitter


def in_a_forked_child(check: Callable[[], object]) -> str:
    """What ``check()`` returned (or raised) in a child forked from this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running the parent's clean-up
        try:
            answer = str(check())
        except BaseException as exc:
            answer = f"{type(exc).__name__}: {exc}"
        os.write(write, answer.encode()[:500])
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as answer:
        return answer.read().decode()


def test_a_forked_child_builds_its_own_pool(broker: redis.Redis) -> None:
    parents = runtime.pool()
    parents_ledger = runtime.ledger()
    parents_ledger.ping()

    def child() -> str:
        if runtime.pool() is parents or runtime.ledger() is parents_ledger:
            return "the parent's pool"
        runtime.ledger().ping()
        runtime.pool().close()
        return "its own"

    assert in_a_forked_child(child) == "its own"
    assert runtime.pool() is parents and not parents.closed
    parents_ledger.ping()


def test_reset_closes_the_pool(broker: redis.Redis) -> None:
    built = runtime.pool()
    runtime.reset()
    assert built.closed
    assert runtime.pool() is not built


def test_the_submitter_has_a_provider_connection_for_each_post_in_flight(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBMIT_CONCURRENCY", "48")
    runtime.reset()
    submitter = runtime.submitter()
    assert isinstance(submitter, Submitter) and submitter.concurrency == 48
    client = runtime.vexora("ID")
    adapter = client._session.get_adapter(client.base_url)
    assert isinstance(adapter, HTTPAdapter)
    assert adapter._pool_maxsize >= 48  # type: ignore[attr-defined]
