"""The Celery application; every setting lives in ``celeryconfig``.

Signal hookups: our JSON, masked logging replaces Celery's own (worker and beat),
and the Redis pre-flight checks run when a worker or beat starts.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_ready

app = Celery("disburse")
app.config_from_object("celeryconfig")

log = logging.getLogger("worker.preflight")


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, logfile: str | None = None, **_: Any) -> None:
    """Connected, so Celery leaves logging to us (worker and beat alike)."""
    from worker.logs import configure_logging

    configure_logging(loglevel or "INFO", logfile=logfile or None)


@worker_ready.connect
@beat_init.connect
def _preflight(**_: Any) -> None:
    """Warn loudly about a Redis that puts the ledger at risk; never fails the start."""
    try:
        import redis

        from worker.config import get_settings
        from worker.preflight import log_warnings

        settings = get_settings()
        client = redis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=settings.read_timeout,
            socket_connect_timeout=settings.connect_timeout,
        )
        try:
            log_warnings(client, log)
        finally:
            client.close()
    except Exception:
        log.warning("!!! Redis pre-flight checks did not run", exc_info=True)
