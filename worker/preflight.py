"""Start-up checks of the Redis that holds the ledger: warnings, never a failed start.

The ledger is the only record of which payouts were sent. A Redis without an
append-only file loses the last minutes of it on a restart (or all of it), and an
eviction policy other than ``noeviction`` lets Redis silently drop orders under
memory pressure. Either could pay someone twice. Managed Redis services often refuse
``CONFIG GET``: then we say we could not check.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

log = logging.getLogger(__name__)

NO_PERSISTENCE = "Redis has no persistence (appendonly no): a Redis restart would lose the ledger"


def check_redis(client: redis.Redis) -> list[str]:
    """Warnings about ``client``'s server settings that put the ledger at risk."""
    try:
        appendonly = _config(client, "appendonly")
        policy = _config(client, "maxmemory-policy")
    except redis.ResponseError as exc:
        return [
            "could not check Redis persistence and eviction settings "
            f"(CONFIG GET refused: {exc}); make sure appendonly is on and "
            "maxmemory-policy is noeviction"
        ]
    except Exception as exc:
        return [
            f"could not check Redis persistence and eviction settings ({type(exc).__name__}: {exc})"
        ]
    warnings: list[str] = []
    if appendonly is not None and appendonly.lower() == "no":
        warnings.append(NO_PERSISTENCE)
    if policy is not None and policy.lower() != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {policy!r}, not 'noeviction': under memory "
            "pressure Redis may evict ledger keys (orders, claims, the rate limiter)"
        )
    return warnings


def _config(client: redis.Redis, name: str) -> str | None:
    reply: Any = client.config_get(name)
    for key, value in dict(reply).items():
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def log_warnings(client: redis.Redis, logger: logging.Logger = log) -> list[str]:
    """Run :func:`check_redis` and log every warning loudly; never raises."""
    try:
        warnings = check_redis(client)
    except Exception as exc:  # the checks must never stop a start
        warnings = [f"could not check Redis settings ({type(exc).__name__})"]
    for warning in warnings:
        logger.warning("!!! %s", warning)
    return warnings
