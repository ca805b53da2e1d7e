"""Submit leases on a real Redis: what a task holds, gives up, and leaves to expire."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from worker.coordination.leases import Leases


def deadlines(leases: Leases) -> dict[str, int]:
    return {str(t): int(s) for t, s in leases.redis.zrange(leases.key, 0, -1, withscores=True)}


@pytest.fixture
def leases(real_redis: redis.Redis) -> Leases:
    return Leases(real_redis, prefix="t", ttl=10.0, renew_every=0.05)


def test_a_task_holds_its_orders_and_gives_them_up_when_it_ends(leases: Leases) -> None:
    before = leases.now_ms()
    lease = leases.take(["a", "b", "c"])
    held = deadlines(leases)
    assert set(held) == {"a", "b", "c"}
    assert all(before + 10_000 <= d <= leases.now_ms() + 10_000 for d in held.values())
    with lease:
        pass
    assert deadlines(leases) == {}


def test_a_received_message_is_leased_until_its_countdown_is_over(leases: Leases) -> None:
    now = leases.now_ms()
    leases.received(["a"])
    leases.received(["b"], due=datetime.now(UTC) + timedelta(seconds=120))
    held = deadlines(leases)
    assert now + 10_000 <= held["a"] <= now + 11_000
    assert now + 129_000 <= held["b"] <= now + 131_000  # its countdown, then the TTL


def test_orders_handed_on_are_left_to_the_worker_that_receives_them(leases: Leases) -> None:
    with leases.take(["done", "again", "retry"]) as lease:
        lease.hand_on(["again"])
        leases.received(["again"])  # another worker has the new message already
        lease.hand_on(["retry"], due_in=120.0)
    now = leases.now_ms()
    held = deadlines(leases)
    assert set(held) == {"again", "retry"}  # "again" not released under the other worker
    assert now < held["again"] <= now + 10_000
    assert now + 129_000 <= held["retry"] <= now + 130_000


def test_a_task_that_fails_leaves_its_leases_to_expire(leases: Leases) -> None:
    with pytest.raises(RuntimeError), leases.take(["a", "b"]):
        raise RuntimeError("the task failed")
    assert leases.expired(leases.now_ms()) == []
    assert sorted(leases.expired(leases.now_ms() + 10_001)) == ["a", "b"]


def test_a_live_task_keeps_renewing(real_redis: redis.Redis) -> None:
    # A TTL long enough that a renewing thread starved of the CPU for a second on a
    # loaded machine still renews in time; the sleep spans more than two of them.
    leases = Leases(real_redis, prefix="t", ttl=1.5, renew_every=0.05)
    with leases.take(["a"]):
        time.sleep(3.5)
        assert leases.expired(leases.now_ms()) == []
    assert deadlines(leases) == {}


def test_a_dead_task_stops_renewing(leases: Leases) -> None:
    leases.take(["a", "b"])  # its task never got to run the block: killed
    assert leases.expired(leases.now_ms()) == []
    later = leases.now_ms() + 10_001
    assert sorted(leases.expired(later)) == ["a", "b"]
    leases.forget_expired(later)  # acted on: the next pass does not see them again
    assert deadlines(leases) == {}


def test_renewal_does_not_lease_again_what_the_pass_dropped(leases: Leases) -> None:
    leases.take(["a", "b"])
    leases.redis.zadd(leases.key, {"a": 0})  # expired
    leases.forget_expired(leases.now_ms())
    leases.extend({"a": 0.0, "b": 0.0}, only_held=True)
    assert list(deadlines(leases)) == ["b"]


def test_a_lease_taken_after_the_pass_read_the_expired_ones_is_not_forgotten(
    leases: Leases,
) -> None:
    leases.redis.zadd(leases.key, {"dead": 1, "again": 1})
    now = leases.now_ms()
    assert sorted(leases.expired(now)) == ["again", "dead"]
    leases.take(["again"])  # a worker received a message with it meanwhile
    leases.forget_expired(now)
    assert list(deadlines(leases)) == ["again"]


def test_a_lease_is_renewed_every_third_of_its_ttl(real_redis: redis.Redis) -> None:
    assert Leases(real_redis).renew_every == 5.0  # the default TTL, 15 s
    assert Leases(real_redis, ttl=3.0).renew_every == 1.0
