"""Every long-running process refuses a database whose schema is behind this code, and
says to run ``disburse db upgrade``: a worker and beat exit at start (through their
Celery signals), the web receiver answers 503 until the schema is upgraded. A server
that cannot be reached at start stops none of them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest
import redis
from celery.signals import beat_init, celeryd_after_setup

import worker.celery.preflight
import worker.celery.signals  # connects the signal handlers under test
from tests.unit.notifications import local_client
from worker.celery import runtime
from worker.core.config import get_settings
from worker.db import migrate
from worker.dev.redis_server import free_port
from worker.web.notify import create_app


def start_worker() -> None:
    celeryd_after_setup.send(sender="w0@test", instance=None, conf=None)


def start_beat() -> None:
    beat_init.send(sender=None)


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """``point_at(url)``: the processes' settings name ``url`` as DATABASE_URL."""
    # beat_init also runs the Redis pre-flight checks: not under test here.
    monkeypatch.setattr(worker.celery.preflight, "log_warnings", lambda client, log: [])
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # set, and never reached
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()


def unreachable_url() -> str:
    return f"postgresql://payouts:hunter2-pw@127.0.0.1:{free_port()}/ledger"


@pytest.mark.parametrize("start", [start_worker, start_beat], ids=["worker", "beat"])
def test_a_schema_behind_stops_the_start_and_names_the_command(
    start: Callable[[], None],
    empty_database: str,
    database: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    point_at(database, empty_database)

    with caplog.at_level(logging.INFO, logger="worker.db"), pytest.raises(SystemExit) as exited:
        start()

    assert exited.value.code == os.EX_CONFIG
    (record,) = [r for r in caplog.records if r.name == "worker.db"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("refusing to start: the database schema is behind")
    assert "run `disburse db upgrade`" in record.getMessage()

    migrate.upgrade(empty_database)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="worker.db"):
        start()  # starts
    assert [r for r in caplog.records if r.name == "worker.db"] == []


@pytest.mark.parametrize("start", [start_worker, start_beat], ids=["worker", "beat"])
def test_a_server_it_cannot_reach_at_start_is_a_warning_not_a_refusal(
    start: Callable[[], None], database: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = unreachable_url()
    point_at(database, url)

    with caplog.at_level(logging.INFO, logger="worker.db"):
        start()  # starts: its tasks retry until the server is back

    (record,) = [r for r in caplog.records if r.name == "worker.db"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("schema not checked at start: cannot connect to PostgreSQL at ")
    assert "postgresql://payouts:***@127.0.0.1" in message
    assert "hunter2" not in message


@pytest.fixture
def web_runtime(broker: redis.Redis, database: pytest.MonkeyPatch) -> Iterator[None]:
    """The receiver's dependencies built from the environment, as the web process does."""
    yield None
    runtime.reset()


def test_the_web_receiver_answers_503_naming_the_command_until_upgraded(
    empty_database: str, database: pytest.MonkeyPatch, web_runtime: None
) -> None:
    point_at(database, empty_database)
    runtime.reset()
    client = local_client(create_app())

    for answer in (client.get("/healthz"), client.post("/notify", json={})):
        assert answer.status_code == 503
        assert "run `disburse db upgrade`" in answer.get_data(as_text=True)

    migrate.upgrade(empty_database)
    answer = client.get("/healthz")  # checked again: serves without a restart
    assert answer.status_code == 200


def test_the_web_receiver_answers_503_while_the_server_cannot_be_reached(
    database: pytest.MonkeyPatch, web_runtime: None, caplog: pytest.LogCaptureFixture
) -> None:
    point_at(database, unreachable_url())
    runtime.reset()

    with caplog.at_level(logging.ERROR, logger="worker.web.notify"):
        answer = local_client(create_app()).get("/healthz")

    assert answer.status_code == 503
    assert answer.get_data(as_text=True) == "unavailable"
    assert "hunter2" not in caplog.text
