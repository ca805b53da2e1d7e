"""``disburse db upgrade`` and ``disburse db status`` against the session's private
PostgreSQL, and what the CLI says about a server it cannot reach."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.servers import empty_ledger
from worker import cli
from worker.core.config import get_settings
from worker.db import migrate
from worker.dev.redis_server import free_port
from worker.ledger import Ledger

NEWEST = migrate.migrations()[-1]


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings re-read from the environment ``use`` sets, and forgotten afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def use(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def test_upgrade_applies_every_migration_then_says_up_to_date(
    empty_database: str,
    settings_from_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(settings_from_env, DATABASE_URL=empty_database)

    assert cli.run(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    for migration in migrate.migrations():
        assert f"applied {migration.version:04d}_{migration.name}" in out
    migrate.check(empty_database)

    assert cli.run(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("up to date")
    assert "applied" not in out


def test_status_says_behind_until_upgraded(
    empty_database: str,
    settings_from_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(settings_from_env, DATABASE_URL=empty_database)

    assert cli.run(["db", "status"]) == 1
    out = capsys.readouterr().out
    assert f"schema version 0000, this code's {NEWEST.version:04d}" in out
    assert "behind" in out
    assert "`disburse db upgrade`" in out

    migrate.upgrade(empty_database)
    assert cli.run(["db", "status"]) == 0
    out = capsys.readouterr().out
    assert f"schema version {NEWEST.version:04d}, this code's {NEWEST.version:04d}" in out
    assert out.splitlines()[-1] == "up to date"


def test_status_accepts_a_schema_newer_than_the_code(
    empty_database: str,
    settings_from_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Mid-deployment: the schema is upgraded first, then the processes.
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'later')")
    use(settings_from_env, DATABASE_URL=empty_database)

    assert cli.run(["db", "status"]) == 0
    assert "newer than this code" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["upgrade", "status"])
def test_a_server_it_cannot_reach_is_one_line_with_the_password_masked(
    command: str,
    settings_from_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there
    use(settings_from_env, DATABASE_URL=f"postgresql://payouts:hunter2-pw@127.0.0.1:{port}/ledger")

    assert cli.run(["db", command]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(
        f"error: cannot connect to PostgreSQL at postgresql://payouts:***@127.0.0.1:{port}/ledger: "
    )
    assert "hunter2" not in captured.err
    assert "Traceback" not in captured.err


def test_a_redis_it_cannot_reach_is_named_with_the_password_masked(
    settings_from_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ledger: Ledger,
    ledger_url: str,
) -> None:
    from worker.celery import runtime

    port = free_port()
    # The pause is kept in PostgreSQL first; its cache in Redis is what fails.
    use(settings_from_env, REDIS_URL=f"redis://:hunter2-pw@127.0.0.1:{port}/0")
    use(settings_from_env, DATABASE_URL=ledger_url)
    runtime.reset()
    try:
        assert cli.run(["pause"]) == 2
    finally:
        settings_from_env.undo()
        runtime.reset()
        empty_ledger(ledger.pool)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (")
    assert "refused" in line and "hunter2" not in line


def test_upgrade_behind_a_held_lock_is_one_line_and_exit_2(
    empty_database: str,
    settings_from_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(settings_from_env, DATABASE_URL=empty_database, PG_LOCK_TIMEOUT="0.1")
    settings_from_env.setattr(migrate, "MIGRATION_LOCK_ATTEMPTS", 2)
    pauses: list[float] = []
    settings_from_env.setattr(migrate.time, "sleep", pauses.append)
    with psycopg.connect(empty_database) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (migrate._LOCK_KEY,))  # an upgrade
        assert cli.run(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: migration 0001_")
    assert "through 2 tries of 0.1 s each (PG_LOCK_TIMEOUT)" in err
    assert len(err.strip().splitlines()) == 1
    assert migrate.current_version(empty_database) == 0
    assert len(pauses) == 1
