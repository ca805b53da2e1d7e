"""Start-up checks of the Redis that coordinates the workers: warnings, never a failed start.

Redis holds no payout state (the ledger is PostgreSQL's), but it holds the queued
messages, the rate limiters and the pause switches. A Redis without an append-only
file forgets them on a restart: queued payouts wait for the sweeper (``SWEEP_AFTER``)
and a pause, even one a systemic rejection set, is lifted. An eviction policy other
than ``noeviction`` drops them under memory pressure, a rate limiter too, and then the
workers may exceed the provider's limit. Managed Redis services often refuse
``CONFIG GET``: then we say we could not check.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

log = logging.getLogger(__name__)

NO_PERSISTENCE = (
    "Redis has no persistence (appendonly no): a Redis restart would lose the queued "
    "messages and the pause switches"
)


def check_redis(client: redis.Redis) -> list[str]:
    """Warnings about ``client``'s server settings that put the coordination at risk."""
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
            "pressure Redis may evict queued messages, pause switches and rate limiters"
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
