"""JSON log lines with masking (worker.core.logs; the rule itself is
tests/unit/core/test_redact.py's), start-up warnings (worker.celery.preflight), and their
Celery signal hookups (worker.celery.signals)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis

from worker.celery.preflight import NO_PERSISTENCE, check_redis, log_warnings
from worker.core.config import get_settings
from worker.core.logs import JsonFormatter, configure_logging

TRADE_NO = "39fa354542824ee789faf526f27c024f"


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, stream
    log.removeHandler(handler)
    log.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_shape(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.info("submitted %s", "ok", extra={"trade_no": TRADE_NO, "batch_id": "b123"})
    (line,) = lines(stream)
    assert set(line) == {"ts", "level", "logger", "message", "trade_no", "batch_id"}
    assert line["level"] == "INFO"
    assert line["logger"] == "test.logs"
    assert line["message"] == "submitted ok"
    assert line["trade_no"] == TRADE_NO
    assert line["batch_id"] == "b123"
    ts = datetime.fromisoformat(line["ts"])
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert "*" not in line["ts"]


def test_one_line_per_record_even_with_newlines_and_exceptions(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    try:
        raise ValueError("account 5464438554636\nbroken")
    except ValueError:
        log.exception("failed for\n%s", "line two")
    assert len(stream.getvalue().splitlines()) == 1
    (line,) = lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError" in line["exc"]
    assert "5464438554636" not in line["exc"]
    assert "*********4636" in line["exc"]


def test_account_and_phone_numbers_are_masked(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.info("paying account 5464438554636 phone +6281245907765 (bank 0002, 100000 IDR)")
    (line,) = lines(stream)
    message = line["message"]
    assert "5464438554636" not in message and "*********4636" in message
    assert "6281245907765" not in message and "+*********7765" in message
    assert "0002" in message  # short numbers stay
    assert "**0000 IDR" in message  # 6+ digits, even an amount: only the last 4 shown
    assert "4636" in message


def test_trade_no_survives_in_its_field_while_text_is_masked(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    all_digits = "12345678901234567890123456789012"
    log.info("order %s done", TRADE_NO, extra={"trade_no": all_digits, "batch_id": all_digits})
    (line,) = lines(stream)
    # Our own ids stay whole in text too, so operators can search for them.
    assert line["message"] == f"order {TRADE_NO} done"
    assert line["trade_no"] == all_digits  # the fields are exempt, whatever they look like
    assert line["batch_id"] == all_digits


def test_an_account_number_glued_to_letters_is_masked(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log.info("provider said: account ACC5464438554636 closed", extra={"note": "x5464438554636"})
    (line,) = lines(stream)
    assert "5464438554636" not in stream.getvalue()
    assert line["message"] == "provider said: account ACC*********4636 closed"
    assert line["note"] == "x*********4636"


def test_numbers_hidden_behind_json_escapes_are_still_masked(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log.info("acct:\n5464438554636\t\x015464438554636")
    assert "5464438554636" not in stream.getvalue()
    assert "554636" not in stream.getvalue()


def test_secrets_in_extra_are_masked(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.info(
        "call",
        extra={
            "app_secret": "TEST_SECRET",
            "access_token": "eyJhbGciOi",
            "password": "hunter2",
            "sign": "59083b685db195fb3e07cadd11d4b50f",
            "headers": {"Authorization": "Bearer abc.def", "X-PARTNER-ID": "p-1"},
            "account": 5464438554636,
            "fields": {"bankAccountNo": "5464438554636", "bankCode": "0002"},
            "attempt": 2,
        },
    )
    (line,) = lines(stream)
    text = stream.getvalue()
    for secret in ("TEST_SECRET", "eyJhbGciOi", "hunter2", "59083b685db1", "abc.def"):
        assert secret not in text
    assert line["app_secret"] == "***"
    assert line["access_token"] == "***"
    assert line["password"] == "***"
    assert line["sign"] == "***"
    assert line["headers"] == {"Authorization": "***", "X-PARTNER-ID": "p-1"}
    assert line["account"] == "*********4636"
    assert line["fields"] == {"bankAccountNo": "*********4636", "bankCode": "0002"}
    assert line["attempt"] == 2


def test_a_bad_format_string_does_not_lose_the_line() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    line = json.loads(JsonFormatter().format(record))
    assert "items" in line["message"]


def test_configure_logging_installs_one_json_handler_on_root() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        stream = io.StringIO()
        configure_logging("DEBUG", stream=stream)
        configure_logging("WARNING", stream=stream)  # idempotent: still one handler
        assert len(root.handlers) == 1
        assert root.level == logging.WARNING
        logging.getLogger("some.module").warning("card 4111111111111111", extra={"trade_no": "t1"})
        logging.getLogger("some.module").info("not shown")
        (line,) = lines(stream)
        assert line["message"] == "card ************1111"
        assert line["trade_no"] == "t1"
        configure_logging(logging.INFO, stream=stream)
        assert root.level == logging.INFO
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_celery_setup_logging_signal_uses_our_config() -> None:
    from celery.signals import setup_logging

    import worker.celery.signals  # noqa: F401 - connects the receivers

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        responses = setup_logging.send(sender=None, loglevel=logging.INFO, logfile=None)
        assert responses  # a receiver is connected, so Celery skips its own set-up
        assert any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


# --- start-up checks (worker.celery.preflight), logged loudly at worker/beat start -------------


class FakeConfig:
    def __init__(self, values: dict[str, str] | None = None, refuse: bool = False) -> None:
        self.values = values or {}
        self.refuse = refuse

    def config_get(self, name: str) -> dict[str, str]:
        if self.refuse:
            raise redis.ResponseError("unknown command 'CONFIG'")
        return {name: self.values[name]} if name in self.values else {}


def test_preflight_on_a_real_server_without_aof(real_redis: redis.Redis) -> None:
    # The tests' server runs with appendonly no and maxmemory-policy noeviction.
    assert check_redis(real_redis) == [NO_PERSISTENCE]


def test_preflight_names_an_evicting_policy() -> None:
    client = FakeConfig({"appendonly": "yes", "maxmemory-policy": "allkeys-lru"})
    (warning,) = check_redis(client)  # type: ignore[arg-type]
    assert "allkeys-lru" in warning and "noeviction" in warning
    safe = FakeConfig({"appendonly": "yes", "maxmemory-policy": "noeviction"})
    assert check_redis(safe) == []  # type: ignore[arg-type]


def test_preflight_when_config_get_is_refused_says_so_once() -> None:
    (warning,) = check_redis(FakeConfig(refuse=True))  # type: ignore[arg-type]
    assert "could not check" in warning


def test_preflight_when_redis_is_down_does_not_raise() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from worker.dev.redis_server import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    (warning,) = check_redis(dead)
    assert "could not check" in warning


def test_preflight_warnings_are_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeConfig({"appendonly": "no", "maxmemory-policy": "volatile-lru"})
    with caplog.at_level(logging.WARNING):
        warnings = log_warnings(client)  # type: ignore[arg-type]
    assert len(warnings) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages == [f"!!! {w}" for w in warnings]


def test_preflight_runs_on_worker_ready_and_beat_init(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.signals import beat_init, worker_ready

    import worker.celery.preflight
    import worker.celery.signals
    import worker.db.readiness

    # beat_init also checks the database's schema (test_readiness): not under test here.
    monkeypatch.setattr(worker.db.readiness, "check_schema", lambda url: None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1:9/unused")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    get_settings.cache_clear()
    calls: list[object] = []
    monkeypatch.setattr(
        worker.celery.preflight, "log_warnings", lambda client, log: calls.append(client)
    )
    worker_ready.send(sender=None)
    beat_init.send(sender=None)
    assert len(calls) == 2

    def broken(client: object, log: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(worker.celery.preflight, "log_warnings", broken)
    worker_ready.send(sender=None)  # never fails the start
    monkeypatch.undo()
    get_settings.cache_clear()
