"""The details API's OAuth token: the fetch (against a fake API on a real port), and the
shared cache: one fetch for the cluster, one refresh per 401, one back-off on failure."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

from tests.unit.fake_provider import (
    API_KEY,
    CLIENT_ID,
    CLIENT_SECRET,
    FakeProvider,
    SpySession,
    error,
    serving,
)
from worker.core.exceptions import (
    AuthenticationFailed,
    NotSent,
    OutcomeUnknown,
    ProviderError,
    TokenUnavailable,
)
from worker.core.settings import Settings
from worker.provider.token import TokenCache, TokenFetcher

ClientFactory = Callable[..., redis.Redis]
SECRET = "client-secret-hunter2"


@pytest.fixture
def new_client(any_redis: redis.Redis) -> Iterator[ClientFactory]:
    """Another client of the same server as ``any_redis`` (what another worker would hold)."""
    made: list[redis.Redis] = []
    kw = any_redis.connection_pool.connection_kwargs
    # fakeredis creates a server's db 0 on the first connection without holding its
    # lock: threads connecting first at the same time can each get a private db 0.
    any_redis.ping()

    def make(decode_responses: bool = True) -> redis.Redis:
        if isinstance(any_redis, fakeredis.FakeRedis):
            client: redis.Redis = fakeredis.FakeRedis(
                host=kw["host"], port=kw["port"], decode_responses=decode_responses
            )
        else:
            client = redis.Redis(
                host=kw["host"], port=kw["port"], decode_responses=decode_responses
            )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


class Provider:
    """The token endpoint: counts calls, hands out tok-1, tok-2, ..."""

    def __init__(self, lifetime: float | str = 3600.0, delay: float = 0.0) -> None:
        self.lifetime = lifetime
        self.delay = delay
        self.failing = False
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, float]:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.delay)
        if self.failing:
            raise ConnectionError(f"token endpoint down (client_secret={SECRET})")
        return f"tok-{n}", self.lifetime  # type: ignore[return-value]


def run_threads(n: int, body: Callable[[int], None]) -> None:
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        body(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)


def test_first_get_fetches_once_then_serves_the_cache(any_redis: redis.Redis) -> None:
    provider = Provider()
    cache = TokenCache(any_redis, provider)
    assert cache.get() == "tok-1"
    assert cache.get() == "tok-1"
    assert TokenCache(any_redis, provider).get() == "tok-1"
    assert provider.calls == cache.refreshes == 1
    # Cached until refresh_margin (30 s) before the provider's expiry.
    assert 3569_000 < any_redis.pttl(cache.key) <= 3570_000


def test_concurrent_cold_gets_fetch_exactly_once(
    any_redis: redis.Redis, new_client: ClientFactory
) -> None:
    provider = Provider(delay=0.1)
    caches = [TokenCache(new_client(), provider) for _ in range(8)]
    tokens: list[str | None] = [None] * 8

    def body(i: int) -> None:
        tokens[i] = caches[i].get()

    run_threads(8, body)
    assert tokens == ["tok-1"] * 8
    assert provider.calls == 1
    assert sum(cache.refreshes for cache in caches) == 1


def test_one_instance_shared_by_threads_fetches_once(any_redis: redis.Redis) -> None:
    provider = Provider(delay=0.05)
    cache = TokenCache(any_redis, provider)
    tokens: list[str | None] = [None] * 8

    def body(i: int) -> None:
        tokens[i] = cache.get()

    run_threads(8, body)
    assert tokens == ["tok-1"] * 8
    assert provider.calls == cache.refreshes == 1


def test_short_lifetime_is_cached_for_most_of_it_then_refetched(any_redis: redis.Redis) -> None:
    provider = Provider(lifetime=0.3)
    cache = TokenCache(any_redis, provider)
    assert cache.get() == "tok-1"
    # Margin capped at a tenth of the lifetime, not the 30 s default.
    assert 200 < any_redis.pttl(cache.key) <= 270
    assert cache.get() == "tok-1"
    time.sleep(0.3)
    assert cache.get() == "tok-2"
    assert provider.calls == 2


def test_expires_in_as_the_providers_string(any_redis: redis.Redis) -> None:
    cache = TokenCache(any_redis, Provider(lifetime="100"))
    assert cache.get() == "tok-1"
    assert 89_000 < any_redis.pttl(cache.key) <= 90_000  # margin min(30, 10) = 10 s


def test_invalidate_current_token_makes_the_next_get_refetch(any_redis: redis.Redis) -> None:
    provider = Provider()
    cache = TokenCache(any_redis, provider)
    token = cache.get()
    cache.invalidate(token)
    assert cache.get() == "tok-2"
    assert provider.calls == 2


def test_invalidate_stale_token_does_nothing(any_redis: redis.Redis) -> None:
    provider = Provider()
    cache = TokenCache(any_redis, provider)
    cache.get()
    cache.invalidate("tok-1")
    assert cache.get() == "tok-2"
    cache.invalidate("tok-1")  # a late 401 for the old token
    cache.invalidate("never-issued")
    assert cache.get() == "tok-2"
    assert provider.calls == 2


def test_many_workers_seeing_one_401_refresh_once(
    any_redis: redis.Redis, new_client: ClientFactory
) -> None:
    provider = Provider(delay=0.05)
    caches = [TokenCache(new_client(), provider) for _ in range(8)]
    old = caches[0].get()
    tokens: list[str | None] = [None] * 8

    def body(i: int) -> None:
        caches[i].invalidate(old)
        tokens[i] = caches[i].get()

    run_threads(8, body)
    assert tokens == ["tok-2"] * 8
    assert provider.calls == 2


def test_failed_fetch_backs_off_cluster_wide(
    any_redis: redis.Redis, new_client: ClientFactory
) -> None:
    provider = Provider()
    provider.failing = True
    mine = TokenCache(any_redis, provider, failure_backoff=0.3)
    theirs = TokenCache(new_client(), provider, failure_backoff=0.3)

    with pytest.raises(TokenUnavailable) as caught:
        mine.get()
    assert isinstance(caught.value.__cause__, ConnectionError)  # the original error, chained
    assert SECRET not in str(caught.value)

    for cache in (theirs, mine):
        with pytest.raises(TokenUnavailable) as caught:
            cache.get()
        assert caught.value.__cause__ is None
        # Refused at once by the back-off, not after waiting out wait_timeout.
        assert "back-off" in str(caught.value) and "no token within" not in str(caught.value)
    assert provider.calls == 1

    time.sleep(0.3)
    provider.failing = False
    assert theirs.get() == "tok-2"
    assert provider.calls == 2


def test_waiters_give_up_when_the_fetching_worker_fails(
    any_redis: redis.Redis, new_client: ClientFactory
) -> None:
    provider = Provider(delay=0.1)
    provider.failing = True
    caches = [TokenCache(new_client(), provider, wait_timeout=5) for _ in range(4)]
    errors: list[BaseException | None] = [None] * 4

    def body(i: int) -> None:
        try:
            caches[i].get()
        except TokenUnavailable as exc:
            errors[i] = exc

    run_threads(4, body)
    assert all(isinstance(error, TokenUnavailable) for error in errors)
    # They gave up on the fetcher's failure, not on waiting out wait_timeout.
    assert not [e for e in errors if "no token within" in str(e)]
    assert provider.calls == 1


def test_waiter_times_out_while_another_worker_holds_the_lock(any_redis: redis.Redis) -> None:
    provider = Provider()
    cache = TokenCache(any_redis, provider, wait_timeout=0.2)
    any_redis.set(f"{cache.key}:lock", "someone-else", px=10_000)
    started = time.monotonic()
    with pytest.raises(TokenUnavailable) as caught:
        cache.get()
    assert time.monotonic() - started >= 0.2
    # At wait_timeout, not when the lock expired.
    assert "no token within 0.2s" in str(caught.value)
    assert provider.calls == 0


def test_lock_of_a_crashed_worker_expires_and_a_waiter_takes_over(
    any_redis: redis.Redis,
) -> None:
    provider = Provider()
    cache = TokenCache(any_redis, provider, wait_timeout=2)
    any_redis.set(f"{cache.key}:lock", "crashed-worker", px=150)
    started = time.monotonic()
    assert cache.get() == "tok-1"
    assert time.monotonic() - started >= 0.1
    assert provider.calls == 1
    assert not any_redis.exists(f"{cache.key}:lock")  # released after the fetch


def test_bytes_clients_get_text(any_redis: redis.Redis, new_client: ClientFactory) -> None:
    raw = new_client(decode_responses=False)
    cache = TokenCache(raw, Provider())
    assert cache.get() == "tok-1"
    assert cache.get() == "tok-1"  # from the cache, decoded
    cache.invalidate("tok-1")
    assert not any_redis.exists(cache.key)


def test_the_token_never_shows_in_repr(any_redis: redis.Redis) -> None:
    cache = TokenCache(any_redis, Provider())
    token = cache.get()
    assert token not in repr(cache)


# --- the shared back-off --------------------------------------------------------------


def test_a_fresh_token_refused_backs_off_cluster_wide(
    any_redis: redis.Redis, new_client: ClientFactory
) -> None:
    provider = Provider()
    mine = TokenCache(any_redis, provider, failure_backoff=0.3)
    theirs = TokenCache(new_client(), provider, failure_backoff=0.3)
    token = mine.get()
    mine.back_off(token)
    for cache in (theirs, mine):
        with pytest.raises(TokenUnavailable, match="a fresh token was refused"):
            cache.get()
    assert provider.calls == 1  # nobody fetched during the back-off
    time.sleep(0.3)
    assert theirs.get() == "tok-2"


def test_back_off_leaves_a_newer_token_alone(any_redis: redis.Redis) -> None:
    provider = Provider()
    cache = TokenCache(any_redis, provider)
    old = cache.get()
    cache.invalidate(old)
    newer = cache.get()
    cache.back_off(old)  # a late verdict on a token already replaced
    assert cache.get() == newer
    assert provider.calls == 2


def test_a_wait_that_times_out_backs_off_the_other_waiters(any_redis: redis.Redis) -> None:
    provider = Provider()
    cache = TokenCache(any_redis, provider, wait_timeout=0.1, failure_backoff=10)
    any_redis.set(f"{cache.key}:lock", "stuck-worker", px=10_000)
    with pytest.raises(TokenUnavailable, match=r"within 0\.1s"):
        cache.get()
    with pytest.raises(TokenUnavailable, match="cluster-wide back-off"):
        TokenCache(any_redis, provider, wait_timeout=5).get()  # at once, not after 5 s
    # A token stored meanwhile (the stuck worker finishing) is served despite the back-off.
    any_redis.set(cache.key, "late-token", px=10_000)
    assert cache.get() == "late-token"
    assert provider.calls == 0


# --- the fetch ------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeProvider]:
    with serving() as fake:
        yield fake


def make_fetcher(url: str, **kwargs: Any) -> TokenFetcher:
    return TokenFetcher(
        url,
        api_key=API_KEY,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        timeouts=(1.0, 2.0),
        **kwargs,
    )


def test_fetch_request_shape(api: FakeProvider) -> None:
    api.reply(
        {
            "status": 200,
            "success": True,
            "data": {"access_token": "abc.def", "token_type": "Bearer", "expires_in": "3600"},
        }
    )
    spy = SpySession()
    assert make_fetcher(api.url, session=spy)() == ("abc.def", 3600.0)
    (seen,) = api.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1.0/access-token/b2b")
    assert seen.headers["X-Partner-Id"] == API_KEY
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {"grant_type": "client_credentials"}
    assert [kw["timeout"] for kw in spy.sent] == [(1.0, 2.0)]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"data": {"access_token": "t", "expires_in": "216000"}}, ("t", 216000.0)),
        ({"data": {"access_token": "t", "expires_in": 60}}, ("t", 60.0)),
        ({"accessToken": "t", "tokenType": "Bearer", "expiresIn": "900"}, ("t", 900.0)),
        ({"data": {"access_token": "t"}}, ("t", 300.0)),
    ],
)
def test_fetch_answer_spellings(
    api: FakeProvider, answer: dict[str, Any], expected: tuple[str, float]
) -> None:
    api.reply({"status": 200, "success": True, **answer})
    assert make_fetcher(api.url)() == expected


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (401, error(401, "Unauthorized partner, please sign in"), AuthenticationFailed),
        (200, {"success": True, "data": {"expires_in": "3600"}}, ProviderError),
        (
            200,
            {"success": True, "data": {"access_token": "t", "expires_in": "soon"}},
            ProviderError,
        ),
        (200, {"success": True, "data": {"access_token": "t", "expires_in": "0"}}, ProviderError),
        (403, error(403, "IP not registered"), ProviderError),
        (500, "oops", OutcomeUnknown),
    ],
)
def test_fetch_errors(
    api: FakeProvider, status: int, body: Any, error_type: type[Exception]
) -> None:
    api.reply(body, status=status)
    with pytest.raises(error_type) as caught:
        make_fetcher(api.url)()
    assert type(caught.value) is error_type
    assert CLIENT_SECRET not in f"{caught.value} {caught.value!r}"


def test_fetch_connection_refused_is_not_sent_and_the_cache_backs_off() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    fetch = make_fetcher(f"http://127.0.0.1:{port}")
    with pytest.raises(NotSent):
        fetch()
    cache = TokenCache(fakeredis.FakeRedis(), fetch)
    with pytest.raises(TokenUnavailable, match="NotSent") as caught:
        cache.get()
    assert isinstance(caught.value.__cause__, NotSent)


def test_fetcher_from_settings_never_shows_the_secret(api: FakeProvider) -> None:
    settings = Settings(
        details_base_url=api.url,
        details_api_key="key-x",
        details_client_id="cid-x",
        details_client_secret="csecret-x",
        connect_timeout=0.7,
        read_timeout=3.5,
    )
    fetch = TokenFetcher.from_settings(settings)
    assert fetch.timeouts == (0.7, 3.5)
    assert "csecret-x" not in repr(fetch) and "key-x" not in repr(fetch)
    api.reply({"data": {"access_token": "t", "expires_in": "60"}})
    assert fetch() == ("t", 60.0)
    assert api.seen[0].headers["X-Partner-Id"] == "key-x"
    basic = base64.b64encode(b"cid-x:csecret-x").decode()
    assert api.seen[0].headers["Authorization"] == f"Basic {basic}"
