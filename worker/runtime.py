"""The process-wide objects the tasks, the CLI and the webhook receiver use.

Built lazily from the settings, because Celery's prefork pool forks after import:
each child process must open its own Redis connections and HTTP pools.
"""

from __future__ import annotations

from functools import cache

import redis

from worker.batches import BatchControls
from worker.config import get_settings
from worker.details import DetailsClient
from worker.leases import Leases
from worker.ledger import Ledger
from worker.metrics import Metrics
from worker.pause import PauseSwitch
from worker.producer import Producer
from worker.publish import (
    publish_lookups,
    publish_resubmissions,
    publish_submissions,
    submit_queue_length,
)
from worker.ratelimit import RateLimiter
from worker.reconcile import Reconciler
from worker.submit import Submitter
from worker.token import TokenCache
from worker.vexora import VexoraClient


@cache
def redis_client() -> redis.Redis:
    settings = get_settings()
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=settings.read_timeout,
        socket_connect_timeout=settings.connect_timeout,
        health_check_interval=30,
    )


@cache
def ledger() -> Ledger:
    return Ledger(redis_client(), prefix=get_settings().key_prefix)


@cache
def leases() -> Leases:
    return Leases(redis_client(), prefix=get_settings().key_prefix)


@cache
def pause_switch() -> PauseSwitch:
    return PauseSwitch(redis_client(), prefix=get_settings().key_prefix)


@cache
def vexora() -> VexoraClient:
    return VexoraClient.from_settings(get_settings())


@cache
def metrics() -> Metrics:
    return Metrics(redis_client(), prefix=get_settings().key_prefix)


@cache
def details() -> DetailsClient:
    """The details client, its bearer token shared by the whole cluster through Redis."""
    settings = get_settings()
    client = DetailsClient.from_settings(settings)

    def fetch_token() -> tuple[str, float]:
        metrics().token_refresh()
        return client.fetch_token()

    client.tokens = TokenCache(
        redis_client(), fetch_token, key=f"{settings.key_prefix}:oauth:token"
    )
    return client


@cache
def submitter() -> Submitter:
    settings = get_settings()
    return Submitter(
        ledger(),
        vexora(),
        RateLimiter.for_endpoint(redis_client(), settings, "submit"),
        pause_switch(),
        claim_lease=settings.claim_lease,
        recover=lambda trade_no: reconciler().lookup(trade_no),
        # Several values a payout: batched, flushed at least once a second and per task.
        metrics=Metrics(redis_client(), prefix=settings.key_prefix, flush_every=1.0),
    )


@cache
def reconciler() -> Reconciler:
    settings = get_settings()
    return Reconciler(
        ledger(),
        vexora(),
        details(),
        RateLimiter.for_endpoint(redis_client(), settings, "details"),
        settings,
        publish_lookups=publish_lookups,
        # Everything the reconciler publishes is a submission again (swept, requeued).
        publish_submissions=publish_resubmissions,
        submit_queue_length=submit_queue_length,
    )


@cache
def producer() -> Producer:
    return Producer(ledger(), get_settings())


@cache
def batch_controls() -> BatchControls:
    return BatchControls(ledger(), lambda: vexora().balance(), publish_submissions)


def reset() -> None:
    """Forget every cached object and re-read the environment (tests, demo, benchmarks)."""
    import importlib

    import kombu.pools

    import celeryconfig
    from worker.app import app

    get_settings.cache_clear()
    for built in (redis_client, ledger, leases, pause_switch, metrics, vexora, details,
                  submitter, reconciler, producer, batch_controls):  # fmt: skip
        built.cache_clear()
    app.config_from_object(importlib.reload(celeryconfig), force=True)
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    # kombu keeps producer pools per broker URL: one for the same URL would still
    # hold the connections just closed.
    kombu.pools.reset()
