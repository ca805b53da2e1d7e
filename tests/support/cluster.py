"""Whole local clusters for the integration and chaos tests (real Redis and PostgreSQL,
the sandbox over HTTP, real ``celery worker`` / ``beat`` and web processes).

A cluster runs on the session's servers (:class:`SharedServers`: a fresh database and a
Redis database index of its own) unless it restarts or wipes them, which only a
cluster on private servers may do (``running_cluster(shared=None)``).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from worker.celery import runtime
from worker.core.states import State
from worker.dev.cluster import LocalCluster
from worker.dev.postgres_server import PostgresServer
from worker.dev.redis_server import RedisServer
from worker.sandbox import SandboxConfig

# The sandbox's closing status -> the state the ledger must end in.
EXPECTED_STATE = {"0000": State.SUCCEEDED, "00029": State.FAILED}


def create_database(server: PostgresServer, name: str) -> str:
    """A new empty database on ``server``; its URL."""
    with psycopg.connect(server.url, autocommit=True) as conn:
        # FILE_COPY (PostgreSQL 15+): a checkpoint and a file copy, about twice as fast
        # without fsync as the default WAL_LOG, which logs every page of the template.
        create = sql.SQL("CREATE DATABASE {} STRATEGY FILE_COPY")
        conn.execute(create.format(sql.Identifier(name)))
    return server.database_url(name)


def drop_database(server: PostgresServer, name: str) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


class SharedServers:
    """The session's PostgreSQL and Redis, lent to one cluster after another: each gets
    a database created for it (about 0.2 s, where a private server's initdb takes 1 s
    and more) and a Redis database index emptied for it. Index 0 stays the unit tests'."""

    def __init__(self, postgres: PostgresServer, redis: RedisServer) -> None:
        self.postgres = postgres
        self.redis = redis
        self._indexes = itertools.cycle(range(1, 16))  # Redis has 16 by default

    @contextmanager
    def lend(self) -> Iterator[dict[str, str]]:
        """``database_url`` and ``redis_url`` for one cluster; the database is dropped after."""
        name = f"cluster_{uuid.uuid4().hex[:12]}"
        index = next(self._indexes)
        client = self.redis.client()
        client.execute_command("SELECT", index)
        client.flushdb()
        client.close()
        redis_url = self.redis.url.rsplit("/", 1)[0] + f"/{index}"
        try:
            yield {"database_url": create_database(self.postgres, name), "redis_url": redis_url}
        finally:
            drop_database(self.postgres, name)


@contextmanager
def running_cluster(shared: SharedServers | None = None, **kwargs: Any) -> Iterator[LocalCluster]:
    """A started cluster, the environment of this process pointed at it while it runs.
    ``shared`` None: on a private Redis and PostgreSQL (migrated by LocalCluster), which
    a test that restarts or wipes them needs."""
    if shared is None:
        with _running(LocalCluster(**kwargs)) as cluster:
            yield cluster
        return
    with shared.lend() as servers, _running(LocalCluster(**servers, **kwargs)) as cluster:
        yield cluster


@contextmanager
def _running(cluster: LocalCluster) -> Iterator[LocalCluster]:
    saved = dict(os.environ)
    try:
        cluster.start()
        os.environ.update(cluster.env())
        runtime.reset()
        cluster.wait_ready()
        yield cluster
    except BaseException:
        print(f"cluster logs: {cluster.log_dir}")
        for log in sorted(cluster.log_dir.glob("*.log")):
            print(
                f"--- {log.name} (tail)\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            )
        raise
    finally:
        cluster.close()
        os.environ.clear()
        os.environ.update(saved)
        runtime.reset()


def fast_sandbox(**knobs: Any) -> SandboxConfig:
    """A sandbox that settles quickly and retries webhooks on a shrunken schedule."""
    defaults: dict[str, Any] = {"settle_delay": (0.1, 0.5), "seed": 11, "webhook_time_scale": 0.02}
    return SandboxConfig(**{**defaults, **knobs})
