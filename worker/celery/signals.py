"""The Celery signal hookups of a worker and beat (``worker.celery.main`` connects them).

Our JSON, masked logging replaces Celery's own (worker and beat), a worker or beat
refuses to start on a database whose schema is behind this code, the Redis pre-flight
checks run when a worker or beat starts, the orders of a submit message are leased as
soon as a worker receives it, and the processes that run tasks ride through a Redis
restart of a few seconds.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from celery import beat
from celery.signals import (
    beat_init,
    celeryd_after_setup,
    setup_logging,
    task_received,
    worker_process_init,
    worker_ready,
)

from worker.celery import runtime

log = logging.getLogger("worker.celery.preflight")


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, logfile: str | None = None, **_: Any) -> None:
    """Connected, so Celery leaves logging to us (worker and beat alike)."""
    from worker.core.logs import configure_logging

    configure_logging(loglevel or "INFO", logfile=logfile or None)


@celeryd_after_setup.connect
@beat_init.connect
def _require_current_schema(sender: Any = None, **_: Any) -> None:
    """Exit (EX_CONFIG) before taking any work when DATABASE_URL or REDIS_URL is not
    set, or the database lacks migrations this code needs (the error names `disburse db
    upgrade`); else say which markets this process serves (worker.celery.startup).

    A worker checks once its logging is set up and before its pool and consumer start
    (``celeryd_after_setup``), beat before its first tick. A server that cannot be
    reached now is no reason to refuse: the tasks retry until it is back.
    """
    import psycopg

    from worker.celery import startup
    from worker.core.config import get_settings
    from worker.core.exceptions import ConfigError, SchemaBehind
    from worker.core.redact import mask_text
    from worker.db.readiness import check_schema, unreachable

    settings = get_settings()
    process = "beat" if isinstance(sender, beat.Service) else "worker"
    try:
        startup.servers(settings)
    except ConfigError as exc:
        logging.getLogger("worker.core.config").error("refusing to start: %s", exc)
        raise SystemExit(os.EX_CONFIG) from None
    startup.report(settings, logging.getLogger("worker.core.config"), process)
    url = settings.database_url
    try:
        check_schema(url)
    except SchemaBehind as exc:
        logging.getLogger("worker.db").error(
            "refusing to start: %s (DATABASE_URL %s)", exc, mask_text(url)
        )
        raise SystemExit(os.EX_CONFIG) from None
    except psycopg.OperationalError as exc:
        logging.getLogger("worker.db").warning(
            "schema not checked at start: %s", unreachable(url, exc)
        )


@worker_ready.connect
@beat_init.connect
def _preflight(**_: Any) -> None:
    """Warn loudly about a Redis that puts the ledger at risk; never fails the start."""
    try:
        from worker.celery.preflight import log_warnings
        from worker.coordination.client import connect
        from worker.core.config import get_settings

        settings = get_settings()
        client = connect(
            settings.redis_url,
            master=settings.redis_sentinel_master,
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


@worker_process_init.connect
def _ride_through_redis_restarts(**_: Any) -> None:
    """Each pool process retries its Redis commands through a short outage (worker.core.backoff)."""
    from worker.core.backoff import REDIS_RETRY

    runtime.redis_client().set_retry(REDIS_RETRY)


@task_received.connect
def _lease_received_submission(request: Any = None, **_: Any) -> None:
    """Lease the orders of a submit message from the moment this worker holds it.

    Its task renews the lease once it runs (worker.coordination.leases); should the worker
    die before that (the message waiting for a free process, or for its countdown), the lease runs
    out and the reconcile pass publishes the orders again, long before the broker would
    give the message back. Should Redis be away, the task leases them when it starts.
    """
    from celery.utils.time import maybe_iso8601

    from worker.core.queues import SUBMIT_TASK

    if request is None or request.name != SUBMIT_TASK:
        return
    try:
        runtime.leases().received(request.args[0], due=maybe_iso8601(request.eta))
    except redis.RedisError as exc:
        logging.getLogger("worker.coordination.leases").warning(
            "submit lease not recorded on receipt: %s", type(exc).__name__
        )
