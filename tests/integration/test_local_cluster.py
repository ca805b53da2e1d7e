"""LocalCluster's databases: a private PostgreSQL started, upgraded, restarted and
stopped with the cluster, or a given one upgraded and left running; and the real
Procfile processes refusing a database whose schema is behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
import requests

from worker.db import migrate
from worker.dev.cluster import LocalCluster, procfile_commands
from worker.dev.postgres_server import PostgresServer
from worker.dev.redis_server import free_port

pytestmark = pytest.mark.integration


def servers_only(**kwargs: object) -> LocalCluster:
    """A cluster of its servers and the sandbox: no process of ours."""
    return LocalCluster(workers=0, beat=False, web=False, **kwargs)  # type: ignore[arg-type]


def postmaster_pid(server: PostgresServer) -> int:
    return int((server.data_directory / "postmaster.pid").read_text().split()[0])


def refuses_connections(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return True
    return False


def test_a_private_postgres_is_upgraded_restarted_and_stopped_with_the_cluster() -> None:
    cluster = servers_only().start()
    try:
        server = cluster.postgres
        assert server is not None
        assert cluster.env()["DATABASE_URL"] == cluster.database_url == server.url
        migrate.check(cluster.database_url)  # upgraded before anything started
        with psycopg.connect(cluster.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n integer)")
            conn.execute("INSERT INTO kept VALUES (1)")

        cluster.restart_postgres(down_for=0.1)
        cluster.restart_postgres(crash=True)
        with psycopg.connect(cluster.database_url) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
        pid = postmaster_pid(server)
    finally:
        cluster.close()

    assert refuses_connections(cluster.database_url)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server.directory.exists()


def test_a_given_database_is_upgraded_and_left_running(empty_database: str) -> None:
    with servers_only(database_url=empty_database) as cluster:
        assert cluster.postgres is None
        assert cluster.env()["DATABASE_URL"] == empty_database
        migrate.check(empty_database)
        with pytest.raises(RuntimeError, match="not its to restart"):
            cluster.restart_postgres()
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_start_that_fails_stops_what_it_started() -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    cluster = servers_only(database_url=unreachable)
    with pytest.raises(psycopg.OperationalError):
        cluster.start()  # Redis started, then the upgrade failed
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=cluster.redis.port, socket_connect_timeout=1).ping()


def spawn(name: str, env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The Procfile's ``name`` line, with the venv's binaries, ``env`` and ``extra``."""
    command = procfile_commands()[name] + list(extra)
    command = [part.replace("${PORT:-8701}", env["PORT"]) for part in command]
    command[0] = str(Path(sys.executable).with_name(command[0]))
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )


def test_the_procfile_processes_refuse_a_schema_behind(empty_database: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": empty_database,
        # Nothing listens there: they refuse before they would use Redis at all.
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    worker = spawn("worker", env, tmp_path / "worker.log")
    beat = spawn("beat", env, tmp_path / "beat.log", f"--schedule={tmp_path / 'schedule'}")
    web = spawn("web", env, tmp_path / "web.log")
    try:
        for name, process in (("worker", worker), ("beat", beat)):
            assert process.wait(timeout=120) == os.EX_CONFIG, name
            output = (tmp_path / f"{name}.log").read_text()
            assert "refusing to start: the database schema is behind" in output, name
            assert "run `disburse db upgrade`" in output, name
            assert "Traceback" not in output, name

        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert web.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert answer.status_code == 503
        assert "run `disburse db upgrade`" in answer.text
    finally:
        for process in (worker, beat, web):
            if process.poll() is None:
                process.kill()
                process.wait()
