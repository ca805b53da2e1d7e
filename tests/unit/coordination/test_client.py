import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from worker.coordination.breaker import Breaker
from worker.coordination.client import SentinelUrl, connect
from worker.coordination.ratelimit import RateLimiter
from worker.core.settings import Rate


def test_a_sentinel_url_names_every_sentinel_and_the_masters_login() -> None:
    url = "sentinel://:pw%40x@s1:26379/2;sentinel://s2:26380;sentinel://s3/2"

    parsed = SentinelUrl.parse(url)

    assert parsed.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (parsed.db, parsed.username, parsed.password) == (2, None, "pw@x")


@pytest.mark.parametrize("url", ["redis://h:6379/0", "sentinel://:26379", "sentinel://h;redis://x"])
def test_anything_else_is_no_sentinel_url(url: str) -> None:
    with pytest.raises(ValueError, match="not a sentinel://"):
        SentinelUrl.parse(url)


def test_a_redis_url_gives_a_plain_client() -> None:
    client = connect("redis://127.0.0.1:1/3", master="mymaster", decode_responses=True)

    assert type(client.connection_pool) is redis.ConnectionPool
    assert client.connection_pool.connection_kwargs["db"] == 3


def test_a_sentinel_url_gives_a_client_of_the_named_master() -> None:
    client = connect(
        "sentinel://:pw@127.0.0.1:1/4;sentinel://127.0.0.1:2/4",
        master="payouts",
        socket_timeout=2.0,
        decode_responses=True,
    )

    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "payouts"
    assert pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["decode_responses"] is True
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    # The Sentinels are asked without the master's password, within the same timeouts.
    assert sentinels[0].connection_pool.connection_kwargs["password"] is None
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 2.0


def test_the_lua_scripts_run_on_a_master_that_never_loaded_them(real_redis: redis.Redis) -> None:
    """A promoted replica has none of the old master's scripts cached (as after a
    restart): each is loaded again when the server answers NOSCRIPT."""
    limiter = RateLimiter(real_redis, "submit:ID", Rate(1000))
    breaker = Breaker(real_redis, "disburse", "ID", rejections=2, window=30.0)
    assert limiter.try_acquire() == 0.0

    real_redis.script_flush()

    assert limiter.try_acquire() == 0.0
    assert breaker.refused("T1", "9001") is None
    assert breaker.refused("T2", "9001") == {"9001": 2}
