"""One OAuth token for the whole cluster, cached in Redis (DESIGN.md rule 6).

The token lives under one key with a TTL that ends a little before the provider's
expiry, so a cached token always has time left. When it is missing, one process
(holding a Redis lock with an owner token) asks the provider for a new one and the
others wait for it instead of asking too. A 401 deletes the cached token only if it
is still the rejected one (``token.lua``), so N workers seeing the same 401 cause
one refresh. A failed fetch sets a short cluster-wide backoff so that the token
endpoint is not hammered by every waiting worker.

Tokens and secrets never appear in logs or exception messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock

from worker.exceptions import TokenUnavailable

log = logging.getLogger(__name__)

_INVALIDATE = Path(__file__).with_name("token.lua").read_text(encoding="utf-8")

# Waiters poll the key: first quickly (a refresh usually takes one HTTP round
# trip), then at most this often.
_POLL_FIRST = 0.005
_POLL_MAX = 0.05


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class TokenCache:
    """The shared bearer token: ``get()`` before a call, ``invalidate(token)`` after a 401.

    ``fetch()`` asks the provider for a new token and returns
    ``(access_token, expires_in_seconds)``.
    """

    def __init__(
        self,
        redis: Redis,
        fetch: Callable[[], tuple[str, float]],
        *,
        key: str = "disburse:oauth:token",
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

        Raises ``TokenUnavailable`` when the fetch fails (here or in another
        process, within ``failure_backoff``) or no token arrives within ``wait_timeout``.
        """
        deadline = time.monotonic() + self._wait_timeout
        delay = _POLL_FIRST
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
                raise TokenUnavailable(
                    f"no OAuth token within {self._wait_timeout:g}s: "
                    "another worker holds the refresh lock and has not stored a token"
                )
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def invalidate(self, token: str) -> None:
        """The provider rejected ``token`` (401): forget it, unless it was already replaced."""
        if self._invalidate(keys=[self.key], args=[token]):
            log.info("OAuth token rejected by the provider; dropped it from the cache")

    def _cached(self) -> str | None:
        """The cached token; raises ``TokenUnavailable`` while a failed fetch backs off."""
        token, backoff = self._redis.mget([self.key, self._backoff_key])
        if token is not None:
            return _text(token)
        if backoff is not None:
            raise TokenUnavailable(
                "OAuth token fetch failed recently; not retrying for up to "
                f"{self._failure_backoff:g}s (cluster-wide backoff)"
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
            self._redis.set(self._backoff_key, "1", px=max(1, round(self._failure_backoff * 1000)))
            log.warning(
                "OAuth token fetch failed (%s); backing off %gs cluster-wide",
                type(exc).__name__,
                self._failure_backoff,
            )
            # The original error stays as __cause__; its text is not copied into ours.
            raise TokenUnavailable(
                f"OAuth token fetch failed ({type(exc).__name__}); "
                f"cluster-wide backoff {self._failure_backoff:g}s"
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
