"""The stop switches: cluster-wide (``disburse pause``) and one per provider account."""

from __future__ import annotations

import fakeredis
import psycopg
import pytest

from worker.coordination.pause import PauseSwitch
from worker.coordination.pause_store import PauseRecord, PauseStore
from worker.dev.redis_server import RedisServer
from worker.ledger import Ledger


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


# --- kept in PostgreSQL, cached in Redis (issue 21 item 8) ------------------------------


@pytest.fixture
def store(ledger: Ledger) -> PauseStore:
    return PauseStore(ledger.pool)  # ``ledger`` empties the pauses table too


def test_a_pause_survives_a_redis_wipe(redis: fakeredis.FakeRedis, store: PauseStore) -> None:
    PauseSwitch(redis, "t", store=store).pause("incident 42", who="alice")
    redis.flushall()
    ar = PauseSwitch(redis, "t", account="AR", store=store)
    assert ar.reason() == "incident 42"  # refilled from PostgreSQL before answering
    assert redis.get("t:paused") == "incident 42" and redis.get("t:paused-loaded") == "1"
    (record,) = PauseSwitch(redis, "t", store=store).records().values()
    assert (record.scope, record.reason, record.who) == ("all", "incident 42", "alice")
    assert record.since is not None


def test_an_account_pause_survives_a_wipe_and_stops_that_account_only(
    redis: fakeredis.FakeRedis, store: PauseStore
) -> None:
    PauseSwitch(redis, "t", account="AR", store=store).pause("code 4001", who="systemic-code")
    redis.flushall()
    assert PauseSwitch(redis, "t", account="JP", store=store).reason() is None
    assert PauseSwitch(redis, "t", account="AR", store=store).reason() == "code 4001"


def test_a_second_pause_keeps_the_first_reason(
    redis: fakeredis.FakeRedis, store: PauseStore
) -> None:
    switch = PauseSwitch(redis, "t", store=store)
    first, created = switch.pause("incident 42", who="alice")
    again, created_again = switch.pause("lunch", who="bob")
    assert created and not created_again
    assert (again.reason, again.who, again.since) == ("incident 42", "alice", first.since)
    assert switch.reason() == "incident 42"


def test_resume_records_who_lifted_the_pause(
    redis: fakeredis.FakeRedis, store: PauseStore, ledger: Ledger
) -> None:
    switch = PauseSwitch(redis, "t", store=store)
    switch.pause("incident 42", who="alice")
    PauseSwitch(redis, "t", account="AR", store=store).pause("code 4001", who="circuit-breaker")
    assert switch.resume(who="carol")
    assert switch.records() == {} and switch.reason() is None
    redis.flushall()
    assert switch.reason() is None  # nothing comes back from PostgreSQL either
    with ledger.pool.connection() as conn:
        rows = conn.execute("SELECT scope, resumed_by FROM pauses ORDER BY id").fetchall()
    assert rows == [("all", "carol"), ("AR", "carol")]
    assert not switch.resume(who="carol")


def test_a_pause_state_that_cannot_be_read_holds_submissions(
    redis: fakeredis.FakeRedis, store: PauseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> dict[str, PauseRecord]:
        raise psycopg.OperationalError("server closed the connection")

    monkeypatch.setattr(store, "active", down)
    reason = PauseSwitch(redis, "t", account="AR", store=store).reason()
    assert reason is not None and "pause state unknown" in reason
    assert redis.get("t:paused-loaded") is None  # the next reader tries again


def test_a_pause_during_a_refill_is_not_lost(
    redis: fakeredis.FakeRedis, store: PauseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = store.active
    other = PauseSwitch(redis, "t", store=store)  # another process, on the same Redis
    reads: list[int] = []

    def active() -> dict[str, PauseRecord]:
        found = read()
        if not reads:  # an operator pauses between the refill's read and its write
            other.pause("incident 43", who="dave")
        reads.append(len(found))
        return found

    monkeypatch.setattr(store, "active", active)
    assert PauseSwitch(redis, "t", store=store).reason() == "incident 43"
    assert reads == [0, 1]  # read again after the pause came in between


def test_a_resume_during_a_refill_is_not_undone(
    redis: fakeredis.FakeRedis, store: PauseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    PauseSwitch(redis, "t", store=store).pause("incident 42", who="alice")
    redis.flushall()
    read = store.active
    reads: list[int] = []

    def active() -> dict[str, PauseRecord]:
        found = read()
        if not reads:
            PauseSwitch(redis, "t", store=store).resume(who="carol")
        reads.append(len(found))
        return found

    monkeypatch.setattr(store, "active", active)
    assert PauseSwitch(redis, "t", store=store).reason() is None
    assert redis.get("t:paused") is None


def test_a_pause_survives_a_real_redis_restart(store: PauseStore) -> None:
    with RedisServer() as server:  # no persistence: a restart loses every key
        client = server.client()
        PauseSwitch(client, "t", account="AR", store=store).pause("code 4001", who="x")
        server.restart()
        client = server.client()
        assert client.get("t:paused:AR") is None
        assert PauseSwitch(client, "t", account="AR", store=store).reason() == "code 4001"
        client.close()


def test_a_pause_whose_cache_write_was_missed_is_cached_after_a_refresh(
    redis: fakeredis.FakeRedis, store: PauseStore
) -> None:
    switch = PauseSwitch(redis, "t", account="AR", store=store)
    assert switch.reason() is None  # the cache is loaded, and says: running
    store.pause("all", "incident 42", "alice")  # Redis was unreachable for the rest
    assert switch.reason() is None
    switch.refresh()  # every reconcile pass
    assert switch.reason() == "incident 42"
