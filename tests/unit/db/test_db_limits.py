"""The limits of PostgreSQL sessions (worker.db.session) and of migrations' lock waits
(worker.db.migrate), on the unit suite's private PostgreSQL."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from schemas import Payout
from worker.celery import runtime
from worker.core.config import get_settings, load_settings
from worker.core.exceptions import MigrationLocked
from worker.core.states import State
from worker.db import migrate
from worker.db.pool import open_pool
from worker.db.session import KEEPALIVES, SessionLimits, connection_kwargs, writable_conninfo
from worker.ledger import Ledger, new_batch_id
from worker.ledger.sql import ENQUEUE_LOCK

SHOWN = (
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
)


def shown(pool: ConnectionPool) -> dict[str, str]:
    with pool.connection() as conn:
        return {name: str(_one(conn, f"SHOW {name}")) for name in SHOWN}


def _one(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def test_a_pooled_session_runs_under_the_default_limits(ledger_pool: ConnectionPool) -> None:
    """The unit suite's own pool: every pool gets them."""
    assert shown(ledger_pool) == {
        "statement_timeout": "1min",
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "1min",
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }


def test_the_runtime_pool_runs_under_the_settings_limits(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", ledger_url)
    monkeypatch.setenv("PG_STATEMENT_TIMEOUT", "2m")
    monkeypatch.setenv("PG_LOCK_TIMEOUT", "1.5")
    monkeypatch.setenv("PG_IDLE_IN_TRANSACTION_TIMEOUT", "0")
    get_settings.cache_clear()
    runtime.reset()
    try:
        found = shown(runtime.pool())
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        runtime.reset()
    assert (
        found["statement_timeout"],
        found["lock_timeout"],
        found["idle_in_transaction_session_timeout"],
    ) == ("2min", "1500ms", "0")


def test_the_url_own_options_and_keepalives_win(ledger_url: str) -> None:
    url = f"{ledger_url}?options=-c%20lock_timeout%3D3s&keepalives_idle=45"
    with open_pool(url) as pool:
        found = shown(pool)
    assert (found["lock_timeout"], found["statement_timeout"]) == ("3s", "1min")
    assert (found["tcp_keepalives_idle"], found["tcp_keepalives_count"]) == ("45", "3")


def test_connection_kwargs() -> None:
    limits = SessionLimits(statement_timeout=0.25, lock_timeout=0, idle_in_transaction_timeout=90)
    options = (
        "-c statement_timeout=250 -c lock_timeout=0 -c idle_in_transaction_session_timeout=90000"
    )
    server_keepalives = (
        " -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
    )
    assert connection_kwargs("postgresql://h/db", limits) == {
        **KEEPALIVES,
        "target_session_attrs": "read-write",
        "options": options + server_keepalives,
    }
    given = connection_kwargs(
        "host=h options='-c search_path=x' keepalives=0 target_session_attrs=any", limits
    )
    assert given["options"] == f"{options} -c search_path=x" and "keepalives" not in given
    assert "target_session_attrs" not in given  # the URL's own wins


def test_migrations_connect_to_a_writable_server_unless_the_url_says_otherwise() -> None:
    assert conninfo_to_dict(writable_conninfo("postgresql://u@h1:5432,h2:5433/db")) == {
        "user": "u",
        "host": "h1,h2",
        "port": "5432,5433",
        "dbname": "db",
        "target_session_attrs": "read-write",
    }
    any_server = "postgresql://u@h1,h2/db?target_session_attrs=any"
    assert writable_conninfo(any_server) == any_server


def test_our_side_of_a_pooled_connection_sends_keepalives(ledger_pool: ConnectionPool) -> None:
    with ledger_pool.connection() as conn:
        sock = socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


def test_a_statement_over_the_timeout_is_cancelled(ledger_url: str) -> None:
    limits = SessionLimits(statement_timeout=0.2)
    with (
        open_pool(ledger_url, limits=limits) as pool,
        pool.connection() as conn,
        pytest.raises(psycopg.errors.QueryCanceled),
    ):
        conn.execute("SELECT pg_sleep(30)")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PG_STATEMENT_TIMEOUT", "soon", "PG_STATEMENT_TIMEOUT='soon' is not a duration"),
        ("PG_LOCK_TIMEOUT", "-1", "PG_LOCK_TIMEOUT='-1' is not a duration"),
    ],
)
def test_a_bad_limit_is_one_line_naming_the_setting(name: str, value: str, message: str) -> None:
    from worker.core.exceptions import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_settings({name: value})


def test_limit_settings_read_durations() -> None:
    settings = load_settings({"PG_STATEMENT_TIMEOUT": "5m", "PG_LOCK_TIMEOUT": "0"})
    assert (settings.pg_statement_timeout, settings.pg_lock_timeout) == (300.0, 0.0)
    assert load_settings({}).pg_idle_in_transaction_timeout == 60.0


# --- migrations wait for locks with a timeout, and retry ---------------------------------


@pytest.fixture
def locked_table(empty_database: str) -> Iterator[tuple[str, psycopg.Connection]]:
    """A database with table ``t`` whose every lock another open transaction holds."""
    with psycopg.connect(empty_database, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id integer)")
    holder = psycopg.connect(empty_database)
    holder.execute("SELECT * FROM t")  # ACCESS SHARE, until the transaction ends
    try:
        yield empty_database, holder
    finally:
        holder.close()


@pytest.fixture
def altering_t(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> migrate.Migration:
    """The only migration shipped: one that needs ``t`` for itself (ACCESS EXCLUSIVE)."""
    source = tmp_path / "0001_add_column.sql"
    source.write_text("ALTER TABLE t ADD COLUMN note text")
    migration = migrate.Migration(1, "add_column", source)
    monkeypatch.setattr(migrate, "migrations", lambda: [migration])
    return migration


def test_a_migration_behind_a_held_lock_retries_then_fails_naming_it(
    locked_table: tuple[str, psycopg.Connection], altering_t: migrate.Migration
) -> None:
    url, _ = locked_table
    pauses: list[float] = []
    with pytest.raises(MigrationLocked) as failed:
        migrate.upgrade(url, lock_timeout=0.1, attempts=3, sleep=pauses.append)
    assert str(failed.value).startswith(
        "migration 0001_add_column not applied: a lock it needs stayed held by another "
        "session through 3 tries of 0.1 s each (PG_LOCK_TIMEOUT)"
    )
    assert "disburse db upgrade" in str(failed.value)
    assert len(pauses) == 2 and all(
        0 < pause <= migrate.MIGRATION_LOCK_BACKOFF_CAP for pause in pauses
    )
    assert migrate.current_version(url) == 0
    with psycopg.connect(url) as conn:
        columns = "SELECT count(*) FROM information_schema.columns WHERE table_name = 't'"
        assert _one(conn, columns) == 1


def test_a_migration_succeeds_once_the_lock_is_released(
    locked_table: tuple[str, psycopg.Connection], altering_t: migrate.Migration
) -> None:
    url, holder = locked_table
    pauses: list[float] = []

    def release(seconds: float) -> None:
        pauses.append(seconds)
        holder.rollback()  # the other session's transaction ends during the pause

    assert migrate.upgrade(url, lock_timeout=0.1, attempts=3, sleep=release) == [1]
    assert len(pauses) == 1
    with psycopg.connect(url) as conn:
        assert _one(conn, "SELECT version FROM schema_migrations") == 1


# --- a multi-row enqueue waits its turn longer than the lock timeout ---------------------


def test_a_batch_waits_its_turn_past_the_lock_timeout(ledger: Ledger, ledger_url: str) -> None:
    """Another batch's COPY may take longer than PG_LOCK_TIMEOUT: the next waits for it."""
    fields = {"amount": "100000", "bankAccountNo": "5464438554636", "bankCode": "0002"}
    payouts = [Payout("ID", "IDR", Decimal("100000"), None, fields) for _ in range(2)]
    limits = SessionLimits(lock_timeout=0.1)
    with open_pool(ledger_url, limits=limits) as pool, psycopg.connect(ledger_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (ENQUEUE_LOCK,))  # a batch's turn
        with ThreadPoolExecutor(1) as executor:
            done = executor.submit(
                Ledger(pool).create_orders, payouts, batch_id=new_batch_id(), market="ID"
            )
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%pg_advisory_xact_lock%%' AND now() - query_start > %s"
            )
            with psycopg.connect(ledger_url, autocommit=True) as watcher:
                # Still waiting well past the lock timeout (a wait for a condition).
                while watcher.execute(waiting, ("1 second",)).fetchone() != (1,):
                    assert not done.done(), done.exception()
                    time.sleep(0.05)
            other.rollback()  # its turn ends
            assert len(done.result(timeout=30)) == 2
    assert ledger.state_counts() == {State.QUEUED: 2}
