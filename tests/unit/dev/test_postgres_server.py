"""The private PostgreSQL server: restarts, crashes, and never someone else's server."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from worker.dev.postgres_server import PostgresServer


def test_it_never_mistakes_another_server_for_its_own(postgres_server: PostgresServer) -> None:
    server = PostgresServer(durable=False, port=postgres_server.port)
    try:
        with pytest.raises(RuntimeError, match=f"port {postgres_server.port}"):
            server.start()
    finally:
        server.close()
    with psycopg.connect(postgres_server.url) as conn:  # the other one still serves
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_crash_mid_query_is_recovered_with_committed_data() -> None:
    with PostgresServer(durable=False) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n integer)")
            conn.execute("INSERT INTO kept VALUES (1)")
        busy = psycopg.connect(server.url)
        failed: list[BaseException] = []

        def long_query() -> None:
            try:
                busy.execute("SELECT count(*) FROM generate_series(1, 1000000000)")
            except psycopg.OperationalError as exc:
                failed.append(exc)

        thread = threading.Thread(target=long_query)
        thread.start()
        # Wait until the query runs on the server. Autocommit: inside one transaction
        # pg_stat_activity is a snapshot, and the loop would never see the query start.
        with psycopg.connect(server.url, autocommit=True) as conn:
            while not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%generate_series%' "
                "AND state = 'active' AND pid <> pg_backend_pid()"
            ).fetchone():
                time.sleep(0.01)

        # A backend still running would keep the old server's shared memory: the
        # next start would refuse to run.
        server.kill()
        server.start()

        thread.join(timeout=30)
        busy.close()
        assert len(failed) == 1
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
