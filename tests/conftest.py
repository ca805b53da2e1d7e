"""Shared fixtures: a private real Redis server for the session (also as the Celery
broker), and fakeredis for unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis

from worker import runtime
from worker.redis_server import RedisServer


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
    real_redis: redis.Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    """The app publishing to the session's own Redis (emptied by ``real_redis``)."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    runtime.reset()
    yield real_redis
    monkeypatch.undo()
    runtime.reset()
