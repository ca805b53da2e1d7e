"""The PostgreSQL foundation: migrations, the schema's own rules, the pool across restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from worker.core.exceptions import ConfigError, DatabaseUnavailable, DisburseError, SchemaBehind
from worker.core.states import FINAL_STATES, State
from worker.db import migrate
from worker.db.pool import open_pool
from worker.dev.postgres_server import PostgresServer

ALL_VERSIONS = [migration.version for migration in migrate.migrations()]


@pytest.fixture
def ledger_database(empty_database: str) -> str:
    migrate.upgrade(empty_database)
    return empty_database


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert list(range(1, len(ALL_VERSIONS) + 1)) == ALL_VERSIONS


def test_upgrade_applies_every_migration_then_nothing(empty_database: str) -> None:
    assert migrate.current_version(empty_database) == 0

    assert migrate.upgrade(empty_database) == ALL_VERSIONS
    assert migrate.upgrade(empty_database) == []

    assert migrate.current_version(empty_database) == ALL_VERSIONS[-1]
    with psycopg.connect(empty_database) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert {"batches", "batch_totals", "orders", "order_events", "schema_migrations"} <= tables


def test_concurrent_upgrades_apply_each_migration_once(empty_database: str) -> None:
    start = threading.Barrier(4)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def upgrade() -> None:
        start.wait()
        try:
            results.append(migrate.upgrade(empty_database))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(version for applied in results for version in applied) == ALL_VERSIONS
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [version for (version,) in rows] == ALL_VERSIONS


def test_check_names_the_upgrade_command_until_upgraded(empty_database: str) -> None:
    with pytest.raises(SchemaBehind) as raised:
        migrate.check(empty_database)
    assert "disburse db upgrade" in str(raised.value)
    assert raised.value.missing == ALL_VERSIONS
    # The CLI reports configuration errors without a traceback.
    assert isinstance(raised.value, ConfigError)

    migrate.upgrade(empty_database)
    migrate.check(empty_database)


def test_check_lists_only_the_missing_migrations(ledger_database: str) -> None:
    with psycopg.connect(ledger_database) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (ALL_VERSIONS[-1],))
    with pytest.raises(SchemaBehind) as raised:
        migrate.check(ledger_database)
    assert raised.value.missing == [ALL_VERSIONS[-1]]


# --- the schema's own rules ---------------------------------------------------------------


def _batch(conn: psycopg.Connection, batch_id: str = "b1") -> None:
    conn.execute(
        "INSERT INTO batches (id, market, row_count) VALUES (%s, 'ID', 1) ON CONFLICT DO NOTHING",
        (batch_id,),
    )


def _order(conn: psycopg.Connection, **values: Any) -> None:
    row: dict[str, Any] = {
        "trade_no": "t1",
        "batch_id": "b1",
        "row_no": 1,
        "market": "ID",
        "currency": "IDR",
        "amount": "10000",
        "reference": "ref-1",
        "state": "QUEUED",
        "payload": Jsonb({"bankAccountNo": "0543408094832"}),
        "masked": Jsonb({"bankAccountNo": "****4832"}),
        **values,
    }
    _batch(conn, row["batch_id"])
    insert = sql.SQL("INSERT INTO orders ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(map(sql.Placeholder, row))
    )
    conn.execute(insert, row)


@pytest.fixture
def conn(ledger_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(ledger_database, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize("state", sorted({*State, "REVERSED"}))
def test_orders_take_every_state_of_the_code(conn: psycopg.Connection, state: str) -> None:
    final = state in FINAL_STATES or state == "REVERSED"
    _order(conn, state=state, payload=None if final else Jsonb({}))
    assert conn.execute("SELECT state FROM orders").fetchone() == (state,)


def test_orders_reject_an_unknown_state(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        _order(conn, state="SENT")


@pytest.mark.parametrize(
    ("column", "good", "bad"),
    [
        ("trade_no", ["a", "Z9" * 16], ["", "a" * 33, "ab-1", "ab 1", "ab\n", "ñ1"]),
        ("currency", ["IDR"], ["", "ID", "IDRX", "idr", "I1R", "IDR\n"]),
    ],
)
def test_orders_check_the_trade_no_and_the_currency(
    conn: psycopg.Connection, column: str, good: list[str], bad: list[str]
) -> None:
    for n, value in enumerate(good):
        _order(conn, **{"trade_no": f"t{n}", "row_no": n, "reference": None, column: value})
    for value in bad:
        with pytest.raises(psycopg.errors.CheckViolation):
            _order(conn, **{"trade_no": "t99", "row_no": 99, "reference": None, column: value})


def test_an_event_rejects_an_unknown_state(conn: psycopg.Connection) -> None:
    _order(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO order_events (trade_no, source, from_state, to_state) "
            "VALUES ('t1', 'submit', 'QUEUED', 'SENT')"
        )


def test_one_order_per_reference(conn: psycopg.Connection) -> None:
    _order(conn, trade_no="t1", reference="same", row_no=1)
    with pytest.raises(psycopg.errors.UniqueViolation):
        _order(conn, trade_no="t2", reference="same", row_no=2)
    # Orders without a reference do not collide.
    _order(conn, trade_no="t3", reference=None, row_no=3)
    _order(conn, trade_no="t4", reference=None, row_no=4)


def test_one_order_per_row_of_a_batch(conn: psycopg.Connection) -> None:
    _order(conn, trade_no="t1", reference=None, row_no=1)
    with pytest.raises(psycopg.errors.UniqueViolation):
        _order(conn, trade_no="t2", reference=None, row_no=1)
    _order(conn, trade_no="t3", reference=None, row_no=1, batch_id="b2")


@pytest.mark.parametrize(
    ("before", "final"), [("QUEUED", "CANCELLED"), ("PROCESSING", "SUCCEEDED")]
)
def test_a_cancelled_or_paid_order_keeps_no_personal_data(
    conn: psycopg.Connection, before: str, final: str
) -> None:
    _order(conn, state=before)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE orders SET state = %s WHERE trade_no = 't1'", (final,))
    conn.execute("UPDATE orders SET state = %s, payload = NULL WHERE trade_no = 't1'", (final,))


def test_the_migration_erases_the_payloads_paid_orders_kept_and_keeps_the_failed_ones(
    empty_database: str,
) -> None:
    """Migrations 0003 to 0006 let a SUCCEEDED order keep its payload: the one that ends
    that erases those (and no others) before the constraint that refuses them."""
    (erasing,) = (m for m in migrate.migrations() if m.name == "succeeded_erases_payload")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for migration in migrate.migrations():
            if migration.version < erasing.version:
                conn.execute(migration.sql())
        for row_no, state in enumerate(("SUCCEEDED", "FAILED", "REVERSED", "PROCESSING"), 1):
            _order(conn, trade_no=state, row_no=row_no, reference=state, state=state)
        conn.execute(erasing.sql())
        kept = conn.execute("SELECT trade_no FROM orders WHERE payload IS NOT NULL ORDER BY 1")
        assert [t for (t,) in kept] == ["FAILED", "PROCESSING", "REVERSED"]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE orders SET state = 'SUCCEEDED' WHERE trade_no = 'PROCESSING'")


def test_event_ids_follow_insertion_order(conn: psycopg.Connection) -> None:
    _order(conn)
    for to_state in ("QUEUED", "SUBMITTING", "PROCESSING"):
        conn.execute(
            "INSERT INTO order_events (trade_no, source, to_state) VALUES ('t1', 'submit', %s)",
            (to_state,),
        )
    rows = conn.execute("SELECT to_state FROM order_events ORDER BY id").fetchall()
    assert [state for (state,) in rows] == ["QUEUED", "SUBMITTING", "PROCESSING"]


def test_amounts_keep_every_digit(conn: psycopg.Connection) -> None:
    _order(conn, currency="USD", amount="463.86")
    (amount,) = conn.execute("SELECT amount FROM orders").fetchone() or (None,)
    assert str(amount) == "463.86"


# --- the pool and the server ---------------------------------------------------------------


def test_the_pool_reconnects_after_a_restart_and_a_crash() -> None:
    with PostgresServer(durable=False) as server:
        migrate.upgrade(server.url)
        with open_pool(server.url, timeout=5) as pool:
            with pool.connection() as conn:
                _order(conn)

            server.stop()
            with pytest.raises(PoolTimeout), pool.connection(timeout=1):
                pass

            server.start()
            with pool.connection() as conn:
                assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)

            server.kill()  # committed data survives a crash
            server.start()
            with pool.connection() as conn:
                assert conn.execute("SELECT trade_no FROM orders").fetchone() == ("t1",)


@pytest.mark.parametrize(
    ("wrong", "reason"),
    [
        ("port", "Connection refused"),
        ("database", 'database "no_such_db" does not exist'),
        ("user", 'role "no_such_user" does not exist'),
    ],
)
def test_a_connection_the_server_refuses_is_its_own_reason_not_a_timeout(
    postgres_server: PostgresServer, wrong: str, reason: str
) -> None:
    from worker.dev.redis_server import free_port

    url = {
        "port": f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/ledger",
        "database": postgres_server.database_url("no_such_db"),
        "user": postgres_server.url.replace("postgres@", "no_such_user:hunter2@"),
    }[wrong]
    with (
        open_pool(url, timeout=1) as pool,
        pytest.raises(DatabaseUnavailable) as caught,
        pool.connection(),
    ):
        pass
    message = str(caught.value)
    assert isinstance(caught.value, DisburseError) and isinstance(caught.value, PoolTimeout)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://")
    assert reason in message and "couldn't get a connection" not in message
    assert "\n" not in message and "hunter2" not in message


def test_the_cli_says_the_servers_reason_and_exits_2(
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from worker import cli
    from worker.celery import runtime

    monkeypatch.setenv("DATABASE_URL", postgres_server.database_url("no_such_db"))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # set, never reached
    runtime.reset()
    try:
        assert cli.run(["batches"]) == 2
    finally:
        monkeypatch.undo()
        runtime.reset()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: cannot connect to PostgreSQL at postgresql://")
    assert line.endswith('FATAL:  database "no_such_db" does not exist')


def test_a_session_the_server_ended_is_replaced_on_checkout(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[int] = []
    full_check = ConnectionPool.check_connection

    def check(conn: psycopg.Connection) -> None:
        checked.append(conn.info.backend_pid)
        full_check(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(check))
    with open_pool(ledger_url, max_size=1) as pool:
        with pool.connection() as conn:
            first = conn.info.backend_pid
        with pool.connection() as conn:  # quiet: handed out without a round trip
            assert conn.info.backend_pid == first
        assert checked == []

        with psycopg.connect(ledger_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            deadline = time.monotonic() + 10
            while not _gone(admin, first):
                assert time.monotonic() < deadline, "the session did not end"
                time.sleep(0.01)
        with pool.connection() as conn:  # the goodbye made the socket readable: replaced
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != first
        assert checked == [first]


def _gone(admin: psycopg.Connection, pid: int) -> bool:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row == (0,)
