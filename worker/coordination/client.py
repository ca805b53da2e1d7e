"""The one way this system opens its Redis client: a plain one for ``redis://``,
``rediss://`` and ``unix://`` URLs, and for a ``sentinel://`` URL a client of the master
the Sentinels name, which asks them again after a failover.

The URL is kombu's (the broker reads the same one):
``sentinel://[:password@]host:port[/db][;sentinel://host:port[/db]...]`` (the settings
give every part the database named); the password, user and database of the first part
are the master's, as kombu and Celery read them. The Sentinels themselves are asked
without credentials (kombu's ``sentinel_kwargs`` default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
_SEPARATOR = ";"


@dataclass(frozen=True)
class SentinelUrl:
    """What a ``sentinel://`` URL says: the Sentinels' addresses and the master's login."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        parts = [urlsplit(part) for part in url.split(_SEPARATOR)]
        if not parts or any(p.scheme != SENTINEL_SCHEME or not p.hostname for p in parts):
            raise ValueError("not a sentinel://host:port[;sentinel://host:port...] URL")
        first = parts[0]
        return cls(
            sentinels=tuple((str(p.hostname), p.port or 26379) for p in parts),
            db=int(first.path.strip("/") or 0),
            username=unquote(first.username) if first.username else None,
            password=unquote(first.password) if first.password else None,
        )


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def connect(url: str, *, master: str, **options: Any) -> redis.Redis:
    """A client for ``url`` (``master``: the name the Sentinels know the master by);
    ``options`` are redis-py's (timeouts, ``decode_responses``, health checks).

    Through Sentinels, a command that finds the master gone fails with a connection
    error, and its retry (worker.core.backoff) reaches the master the Sentinels name
    then: the replica they promoted.
    """
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    parsed = SentinelUrl.parse(url)
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_options, **options)
    return sentinel.master_for(
        master, db=parsed.db, username=parsed.username, password=parsed.password
    )
