"""The stop switches: cluster-wide (``disburse pause``) and one per provider account."""

from __future__ import annotations

import fakeredis
import pytest

from worker.pause import PauseSwitch


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def test_an_account_pause_stops_that_account_only(redis: fakeredis.FakeRedis) -> None:
    ar, jp = PauseSwitch(redis, "t", account="AR"), PauseSwitch(redis, "t", account="JP")
    ar.pause("code 4001: sign error")
    assert ar.reason() == "code 4001: sign error"
    assert jp.reason() is None
    assert PauseSwitch(redis, "t").reason() is None  # the cluster as a whole runs
    assert PauseSwitch(redis, "t").paused() == {"AR": "code 4001: sign error"}


def test_the_cluster_wide_pause_stops_every_account_and_resume_clears_all(
    redis: fakeredis.FakeRedis,
) -> None:
    cluster, ar = PauseSwitch(redis, "t"), PauseSwitch(redis, "t", account="AR")
    ar.pause("code 4002: merchant does not exist")
    cluster.pause("operator")
    assert ar.reason() == "operator"  # the cluster-wide reason first
    assert PauseSwitch(redis, "t", account="JP").reason() == "operator"
    assert cluster.resume()
    assert ar.reason() is None and cluster.paused() == {}
    assert not cluster.resume()


def test_resuming_an_account_leaves_the_cluster_pause(redis: fakeredis.FakeRedis) -> None:
    cluster, ar = PauseSwitch(redis, "t"), PauseSwitch(redis, "t", account="AR")
    cluster.pause("operator")
    ar.pause("ip not allowed")
    assert ar.resume()
    assert ar.reason() == "operator"
    assert cluster.paused() == {"all": "operator"}


def test_the_reason_is_read_in_a_pipeline(redis: fakeredis.FakeRedis) -> None:
    ar = PauseSwitch(redis, "t", account="AR")
    ar.pause("")
    pipe = redis.pipeline(transaction=False)
    ar.queue_reason(pipe)
    (reply,) = pipe.execute()
    assert ar.reason_reply(reply) == "paused"


def test_a_pause_set_before_the_upgrade_still_holds(redis: fakeredis.FakeRedis) -> None:
    redis.set("t:paused", "operator, before the deploy")  # the key the older version wrote
    assert PauseSwitch(redis, "t", account="ID+JP+KH").reason() == "operator, before the deploy"
