"""Failover drill: the Redis master SIGKILLed mid-batch and its replica promoted by the
three Sentinels, workers killed meanwhile (tests/support/failover.py)."""

from __future__ import annotations

import pytest

from tests.support.failover import drill
from worker.dev.replicated import ReplicatedPostgres, ReplicatedRedis

pytestmark = pytest.mark.integration


def test_a_redis_failover_mid_batch_pays_nothing_twice_and_loses_nothing() -> None:
    def fail(_: ReplicatedPostgres, redis_servers: ReplicatedRedis) -> None:
        redis_servers.wait_promoted(redis_servers.kill_master())

    drill(fail, "Redis master killed, replica promoted by the Sentinels")
