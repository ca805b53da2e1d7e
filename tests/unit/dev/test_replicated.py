"""The replicated servers of ``disburse up --replicated`` and the drills, failed over as
``disburse failover`` does: the engine's own clients follow the promoted server."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from worker.cli import main
from worker.coordination.client import connect
from worker.core.backoff import REDIS_RETRY
from worker.db.pool import open_pool
from worker.dev.replicated import (
    SENTINEL_MASTER,
    ReplicatedPostgres,
    ReplicatedRedis,
    RunState,
    fail_over_postgres,
    fail_over_redis,
)


def test_the_pool_follows_a_postgresql_failover_and_loses_no_commit(tmp_path: Path) -> None:
    with ReplicatedPostgres(synchronous=True) as servers:
        RunState(servers.primary.pid or 0, servers.standby.port, []).write(tmp_path)
        # The standby is listed first: only asking for a writable server passes it over.
        with open_pool(servers.url()) as pool:
            with pool.connection() as conn:
                conn.execute("CREATE TABLE kept (n integer)")
                conn.execute("INSERT INTO kept VALUES (1)")

            said = fail_over_postgres(tmp_path)

            assert "promoted" in said
            with pool.connection() as conn:  # the same pool, within its 10 s wait
                conn.execute("INSERT INTO kept VALUES (2)")
                assert conn.execute("SELECT array_agg(n ORDER BY n) FROM kept").fetchone() == (
                    [1, 2],
                )
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        with pytest.raises(RuntimeError, match="no standby left"):
            fail_over_postgres(tmp_path)


def test_the_redis_client_follows_the_master_the_sentinels_promote(tmp_path: Path) -> None:
    with ReplicatedRedis() as servers:
        RunState(0, 0, servers.sentinel_ports).write(tmp_path)
        client = connect(servers.url, master=SENTINEL_MASTER, decode_responses=True)
        client.set_retry(REDIS_RETRY)  # as every worker process does (worker.celery.signals)
        client.set("before", "1")
        client.wait(1, 1000)  # on the replica too (replication is asynchronous)
        old = servers.master.port

        said = fail_over_redis(tmp_path)

        assert f"port {old}" in said and "promoted" in said
        assert client.get("before") == "1"
        client.set("after", "2")
        assert client.connection_pool.get_master_address()[1] == servers.replica.port
        with pytest.raises(RuntimeError, match="no replica left"):
            fail_over_redis(tmp_path)


def test_failover_refuses_servers_it_did_not_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["failover", "postgres", "--log-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "no `disburse up --replicated` runs with --log-dir" in result.output
