"""The details API's OAuth token: fetched (:class:`TokenFetcher`) and shared by the whole
cluster through Redis (:class:`TokenCache`, DESIGN.md rule 6).

The token lives under one key with a TTL that ends a little before the provider's
expiry, so a cached token always has time left. When it is missing, one process
(holding a Redis lock with an owner token) asks the provider for a new one and the
others wait for it instead of asking too. A 401 deletes the cached token only if it
is still the rejected one (``token.lua``), so N workers seeing the same 401 cause
one refresh.

The cache is also the one cluster-wide back-off of the details API: after a failed
fetch, a fetch that did not finish in time, or a fresh token refused by the API
(:meth:`TokenCache.back_off`), every ``get()`` in the cluster fails at once with
:class:`TokenUnavailable`, without a request, for ``failure_backoff`` seconds, so that
neither the token endpoint nor the details API is hammered by every waiting worker.

Tokens and secrets never appear in logs or exception messages.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock

from worker.core import keys
from worker.core.defaults import TOKEN_DEFAULT_EXPIRES_IN, TOKEN_POLL_FIRST, TOKEN_POLL_MAX
from worker.core.exceptions import ProviderError, TokenUnavailable
from worker.core.settings import KEY_PREFIX, Settings
from worker.provider.details import DetailsApi, check_answer
from worker.provider.http_client import json_object

log = logging.getLogger(__name__)

_INVALIDATE = Path(__file__).with_name("token.lua").read_text(encoding="utf-8")


TOKEN_PATH = "/api/v1.0/access-token/b2b"  # noqa: S105 (a URL path, not a secret)


class TokenFetcher(DetailsApi):
    """Asks the details API for a new access token: ``fetcher()`` -> (token, seconds).

    A POST to the token path with the partner key and the client id and secret as
    HTTP Basic credentials (seed 003). Called by :class:`TokenCache` when the cluster
    has no token; never retries by itself.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        client_id: str,
        client_secret: str,
        timeouts: tuple[float, float],
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeouts=timeouts, session=session)
        self.client_id = client_id
        self._client_secret = client_secret

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenFetcher:
        return cls(
            settings.details_base_url,
            api_key=settings.details_api_key,
            client_id=settings.details_client_id,
            client_secret=settings.details_client_secret,
            timeouts=settings.timeouts,
        )

    def __repr__(self) -> str:
        return f"TokenFetcher(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def __call__(self) -> tuple[str, float]:
        """A new access token and its lifetime in seconds (``expires_in`` arrives as a string).

        401 -> AuthenticationFailed (wrong client id/secret or API key); connect
        failures -> NotSent; anything else -> ProviderError (the call is idempotent,
        so callers simply try again later).
        """
        what = "access token"
        basic = base64.b64encode(f"{self.client_id}:{self._client_secret}".encode()).decode()
        response = self._send(
            "POST",
            TOKEN_PATH,
            what,
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
            json={"grant_type": "client_credentials"},
        )
        body = check_answer(response, json_object(response), what)
        data = body.get("data")
        source: Mapping[str, Any] = data if isinstance(data, dict) else body
        token = source.get("access_token", source.get("accessToken"))
        if not isinstance(token, str) or not token:
            raise ProviderError(f"{what}: no access_token in the answer")
        raw_expiry = source.get("expires_in", source.get("expiresIn"))
        if raw_expiry is None:
            return token, TOKEN_DEFAULT_EXPIRES_IN
        try:
            expires_in = float(str(raw_expiry).strip())
        except ValueError:
            raise ProviderError(f"{what}: expires_in is not a number of seconds") from None
        if not 0 < expires_in < float("inf"):
            raise ProviderError(f"{what}: expires_in must be positive")
        return token, expires_in


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class TokenCache:
    """The shared bearer token: ``get()`` before a call, ``invalidate(token)`` after a 401,
    ``back_off(token)`` when even a fresh token got a 401.

    ``fetch()`` asks the provider for a new token and returns
    ``(access_token, expires_in_seconds)``: a :class:`TokenFetcher` in production.
    """

    def __init__(
        self,
        redis: Redis,
        fetch: Callable[[], tuple[str, float]],
        *,
        key: str = keys.oauth_token(KEY_PREFIX),
        refresh_margin: float = 30.0,
        lock_timeout: float = 15.0,
        wait_timeout: float = 20.0,
        failure_backoff: float = 5.0,
    ) -> None:
        self._redis = redis
        self._fetch = fetch
        self.key = key
        self._lock_key = f"{key}:lock"
        self._backoff_key = f"{key}:backoff"
        self._refresh_margin = refresh_margin
        # Longer than a fetch can take (HTTP timeouts), or a second process may
        # start fetching while the first is still at it.
        self._lock_timeout = lock_timeout
        self._wait_timeout = wait_timeout
        self._failure_backoff = failure_backoff
        self._invalidate = redis.register_script(_INVALIDATE)
        self._count_lock = threading.Lock()
        self.refreshes = 0  # times THIS instance called fetch()

    def __repr__(self) -> str:
        return f"TokenCache(key={self.key!r}, refreshes={self.refreshes})"

    def get(self) -> str:
        """The cached token, or a new one fetched by exactly one process in the cluster.

        Raises ``TokenUnavailable`` when the fetch fails, no token arrives within
        ``wait_timeout`` (both start the cluster-wide back-off), or while the back-off
        started here or in another process lasts.
        """
        deadline = time.monotonic() + self._wait_timeout
        delay = TOKEN_POLL_FIRST
        while True:
            token = self._cached()
            if token is not None:
                return token
            lock = Lock(
                self._redis,
                self._lock_key,
                timeout=self._lock_timeout,
                blocking=False,
                thread_local=False,
            )
            if lock.acquire(blocking=False):
                try:
                    return self._refresh()
                finally:
                    try:
                        lock.release()
                    except LockError:
                        log.warning(
                            "OAuth token lock expired before the fetch finished; "
                            "lock_timeout (%gs) is shorter than a fetch",
                            self._lock_timeout,
                        )
            # Another process is fetching (or crashed holding the lock, which then
            # expires after lock_timeout and the next loop takes over).
            if time.monotonic() >= deadline:
                # Every other waiter would wait as long: they give up at once instead.
                why = f"no token within {self._wait_timeout:g}s"
                self._start_backoff(why)
                raise TokenUnavailable(
                    f"{why}: another worker holds the refresh lock and has not stored a "
                    f"token; cluster-wide back-off {self._failure_backoff:g}s"
                )
            time.sleep(delay)
            delay = min(delay * 2, TOKEN_POLL_MAX)

    def invalidate(self, token: str) -> None:
        """The provider rejected ``token`` (401): forget it, unless it was already replaced."""
        if self._invalidate(keys=[self.key], args=[token]):
            log.info("OAuth token rejected by the provider; dropped it from the cache")

    def back_off(self, token: str) -> None:
        """A fresh ``token`` was refused too (401 again): our credentials are no good now.

        Starts the cluster-wide back-off, as a failed fetch does, and forgets ``token``
        unless it was already replaced (a newer token still gets its chance).
        """
        # Back-off first: no moment where the token is gone and nothing holds fetches back.
        self._start_backoff("a fresh token was refused")
        self.invalidate(token)

    def _start_backoff(self, why: str) -> None:
        """No process fetches for ``failure_backoff`` seconds; ``why`` is never secret."""
        self._redis.set(self._backoff_key, why, px=max(1, round(self._failure_backoff * 1000)))
        log.warning("OAuth token: %s; backing off %gs cluster-wide", why, self._failure_backoff)

    def _cached(self) -> str | None:
        """The cached token; raises ``TokenUnavailable`` while the back-off lasts."""
        token, backoff = self._redis.mget([self.key, self._backoff_key])
        if token is not None:
            return _text(token)
        if backoff is not None:
            raise TokenUnavailable(
                f"no OAuth token ({_text(backoff)}); not fetching for up to "
                f"{self._failure_backoff:g}s (cluster-wide back-off)"
            )
        return None

    def _refresh(self) -> str:
        # Check again under the lock: another process may have stored a token (or
        # failed) between our miss and taking the lock.
        token = self._cached()
        if token is not None:
            return token
        with self._count_lock:
            self.refreshes += 1
        try:
            token, expires_in = self._fetch()
            lifetime = float(expires_in)
        except Exception as exc:
            # One failure makes everyone back off, instead of every waiter trying next.
            why = f"fetch failed ({type(exc).__name__})"
            self._start_backoff(why)
            # The original error stays as __cause__; its text is not copied into ours.
            raise TokenUnavailable(
                f"OAuth token {why}; cluster-wide back-off {self._failure_backoff:g}s"
            ) from exc
        # Refresh a margin before the provider's expiry, capped at a tenth of the
        # lifetime so that short-lived tokens (seconds) are still cached for most of it.
        margin = min(self._refresh_margin, lifetime * 0.1)
        ttl_ms = int((lifetime - margin) * 1000)
        if ttl_ms > 0:
            self._redis.set(self.key, token, px=ttl_ms)
            log.info("OAuth token refreshed; cached for %.1fs", ttl_ms / 1000)
        else:
            log.warning("OAuth token refreshed with a %gs lifetime: too short to cache", lifetime)
        return token
