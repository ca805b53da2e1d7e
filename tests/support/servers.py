"""The fixture plugin (registered by ``tests/conftest.py``): a private real Redis server
for the session (also as the Celery broker), fakeredis, a private PostgreSQL server for
the session (the ledger on one migrated database emptied before each test, or a fresh
database), and whole clusters on those servers.

Under pytest-xdist each worker process is a session of its own: it starts its own
servers on free ports (never 5432 or 6379).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import fakeredis
import pytest
import redis
from psycopg import sql
from psycopg_pool import ConnectionPool

from tests.support.cluster import SharedServers, create_database, drop_database, running_cluster
from worker.celery import runtime
from worker.db import migrate
from worker.db.pool import open_pool
from worker.dev.cluster import LocalCluster
from worker.dev.credentials import sandbox_env
from worker.dev.postgres_server import PostgresServer
from worker.dev.redis_server import RedisServer
from worker.ledger import Ledger

ClusterFactory = Callable[..., AbstractContextManager[LocalCluster]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, started for this test session only."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def real_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's own server, emptied before each test (never port 6379)."""
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> redis.Redis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture(params=["fakeredis", "redis-server"])
def any_redis(request: pytest.FixtureRequest) -> redis.Redis:
    """Runs a test twice: on fakeredis and on a real server, whose Lua differs in places."""
    if request.param == "fakeredis":
        return request.getfixturevalue("fake_redis")
    return request.getfixturevalue("real_redis")


@pytest.fixture
def broker(
    real_redis: redis.Redis,
    redis_server: RedisServer,
    ledger: Ledger,
    ledger_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[redis.Redis]:
    """The app publishing to the session's own Redis (emptied by ``real_redis``), its
    ledger on the session's ledger database (emptied by ``ledger``), every market on
    the sandbox's account (no sandbox runs: nothing is sent)."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("DATABASE_URL", ledger_url)
    for name, value in sandbox_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    runtime.reset()
    yield real_redis
    monkeypatch.undo()
    runtime.reset()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on a free port, started for this test session only (never 5432).

    Not durable (fsync off): nothing here has to survive the machine crashing.
    """
    with PostgresServer(durable=False) as server:
        yield server


@pytest.fixture
def empty_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a database created for this test alone, without any schema."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield create_database(postgres_server, name)
    drop_database(postgres_server, name)


@pytest.fixture(scope="session")
def ledger_url(postgres_server: PostgresServer) -> str:
    """The URL of the session's ledger database, migrated once (see ``ledger``)."""
    url = create_database(postgres_server, "ledger")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def ledger_pool(ledger_url: str) -> Iterator[ConnectionPool]:
    with open_pool(ledger_url, max_size=8) as pool:
        yield pool


# Referencing tables first. ``audit_events`` is append-only (its trigger refuses a
# DELETE): a test reads the audit rows of its own batches, or those after a mark.
_EMPTY = sql.SQL("; ").join(
    sql.SQL("DELETE FROM {}").format(sql.Identifier(table))
    for table in (
        "order_events",
        "orders",
        "batch_totals",
        "batch_approvals",
        "batches",
        "pauses",
    )
)


def empty_ledger(pool: ConnectionPool) -> None:
    """Every row of the ledger's tables deleted."""
    with pool.connection() as conn:
        conn.execute(_EMPTY)


@pytest.fixture
def ledger(ledger_pool: ConnectionPool) -> Ledger:
    """The ledger, on the session's ledger database emptied for this test.

    Measured on this (shared, 2-core) machine: deleting the few rows a test leaves
    takes about 2 ms; TRUNCATE, which makes new files for every table, 15 to 80 ms; a
    fresh database per test (``empty_database`` + ``migrate.upgrade``) 110 to 250 ms.
    A test that needs a database of its own takes ``empty_database``.
    """
    empty_ledger(ledger_pool)
    return Ledger(ledger_pool)


@pytest.fixture(scope="session")
def shared_servers(postgres_server: PostgresServer, redis_server: RedisServer) -> SharedServers:
    return SharedServers(postgres_server, redis_server)


@pytest.fixture
def cluster_factory(shared_servers: SharedServers) -> ClusterFactory:
    """``with cluster_factory(env=..., sandbox=SandboxConfig(...)) as cluster: ...`` on the
    session's servers; ``private=True`` (or ``appendonly=True``, which only a private
    Redis can be): on servers of its own, for a test that restarts or wipes them."""

    def factory(*, private: bool = False, **kwargs: Any) -> AbstractContextManager[LocalCluster]:
        alone = private or kwargs.get("appendonly", False)
        return running_cluster(None if alone else shared_servers, **kwargs)

    return factory
