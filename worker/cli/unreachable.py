"""A server that does not answer a read, said in one line: ``disburse status`` warns
with it, ``--watch`` says it and reads again (without loading the progress bar's
library for the first)."""

from __future__ import annotations

import psycopg
import redis

# What a read may fail with while a server is away: the CLI says so and reads again.
SERVER_ERRORS = (redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError)


def server_error(exc: BaseException) -> str:
    """One line for a server that did not answer, its URL's password masked."""
    from worker.core.config import get_settings
    from worker.core.redact import mask_text
    from worker.db.readiness import unreachable

    settings = get_settings()
    if isinstance(exc, psycopg.OperationalError):
        return unreachable(settings.database_url, exc)
    return mask_text(f"cannot reach Redis at {settings.redis_url} ({type(exc).__name__})")
