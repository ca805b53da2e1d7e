"""The process-wide objects the tasks, the CLI and the webhook receiver use.

Built lazily from the settings, because Celery's prefork pool forks after import:
each child process must open its own Redis connections, PostgreSQL pool and HTTP
pools. A child forked after its parent built some forgets them (without closing
them: they are the parent's), and builds its own on first use.

What only the workers and some commands use (the Celery app, the flows, the provider
clients, the outbox) is imported by the function that builds it, so that a command
such as ``disburse status`` loads the ledger and the pause switch alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
from functools import cache
from typing import TYPE_CHECKING

import redis
from psycopg_pool import ConnectionPool

from worker.coordination.client import connect as connect_redis
from worker.coordination.leases import Leases
from worker.coordination.metrics import Metrics
from worker.coordination.pause import PauseSwitch
from worker.coordination.pause_store import PauseStore
from worker.core import keys
from worker.core.accounts import Account
from worker.core.config import get_settings
from worker.db.pool import open_pool
from worker.db.session import SessionLimits
from worker.ledger import Ledger

if TYPE_CHECKING:
    from worker.celery.publish import Publisher
    from worker.coordination.inflight import InFlightLookups
    from worker.flows.approvals import Approvals
    from worker.flows.controls import Controls
    from worker.flows.decisions import Decisions
    from worker.flows.heartbeat import ClaimHeartbeat
    from worker.flows.lookup import Lookups
    from worker.flows.market_submitters import MarketSubmitters
    from worker.flows.producer import Producer
    from worker.flows.reconcile import Reconciler
    from worker.flows.submit import Submitter
    from worker.flows.users import Accounts
    from worker.outbox import Deliveries, Feed, Sender
    from worker.provider.details import DetailsClient
    from worker.provider.no_details import NoDetailsApi
    from worker.provider.vexora import VexoraClient

# Seconds a command a person waits on gives Redis and PostgreSQL (see ``interactive``).
INTERACTIVE_TIMEOUT = 3
_interactive = False
_front: str | None = None  # "console" in the console's process (serving_console)


def interactive() -> None:
    """Give up on Redis and PostgreSQL after INTERACTIVE_TIMEOUT seconds (the CLI).

    A wrong address, or one where something else than Redis listens, then fails in
    seconds rather than after the workers' HTTP read timeout, and the caller says so
    in one line: the pool's own warnings of each failed attempt are not shown. Call it
    before anything is built.
    """
    global _interactive
    _interactive = True
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def serving_console() -> None:
    """This process serves the operations console: its actions say so in the audit trail."""
    global _front
    _front = "console"


def origin() -> str:
    """Where this process acts from, for the audit trail: the command line, the console or
    the Python API, and the host."""
    front = _front or ("cli" if _interactive else "api")
    return f"{front}@{socket.gethostname()}"


@cache
def publisher() -> Publisher:
    """The workers' messages, sent through the Celery app."""
    from worker.celery.app import app
    from worker.celery.publish import Publisher

    return Publisher(app)


@cache
def redis_client() -> redis.Redis:
    """The process's one Redis client: every limiter, lease, lock, marker, cache and
    metric of the app goes through it (through Sentinels, it follows the master)."""
    settings = get_settings()
    timeout = INTERACTIVE_TIMEOUT if _interactive else settings.read_timeout
    return connect_redis(
        settings.redis_url,
        master=settings.redis_sentinel_master,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=min(settings.connect_timeout, timeout),
        health_check_interval=30,
    )


@cache
def pool() -> ConnectionPool:
    """The process's PostgreSQL connection pool (worker.db.pool)."""
    settings = get_settings()
    limits = SessionLimits(
        statement_timeout=settings.pg_statement_timeout,
        lock_timeout=settings.pg_lock_timeout,
        idle_in_transaction_timeout=settings.pg_idle_in_transaction_timeout,
    )
    if _interactive:
        return open_pool(
            settings.database_url,
            timeout=INTERACTIVE_TIMEOUT,
            connect_timeout=INTERACTIVE_TIMEOUT - 1,  # libpq: whole seconds, 2 at least
            limits=limits,
        )
    return open_pool(settings.database_url, limits=limits)


@cache
def ledger() -> Ledger:
    # Orders made final are counted as they go: the metrics count no table.
    return Ledger(pool(), on_final=metrics().finalized, claim_ttl=get_settings().lease_ttl)


@cache
def leases() -> Leases:
    settings = get_settings()
    return Leases(redis_client(), prefix=settings.key_prefix, ttl=settings.lease_ttl)


@cache
def pause_switch(account: Account | None = None) -> PauseSwitch:
    """The cluster-wide switch, or with ``account`` that provider account's."""
    name = account.name if account is not None else None
    # PostgreSQL holds the switches; Redis caches them (worker.coordination.pause).
    store = PauseStore(ledger().pool)
    return PauseSwitch(redis_client(), prefix=get_settings().key_prefix, account=name, store=store)


@cache
def _vexora(account: Account) -> VexoraClient:
    from worker.provider.vexora import VexoraClient

    settings = get_settings()
    return VexoraClient.for_account(
        account,
        timeouts=settings.timeouts,
        not_found_codes=settings.not_found_codes,
        # A connection for each POST in flight: no sender waits for one.
        pool_size=max(10, settings.submit_concurrency),
    )


def vexora(market: str) -> VexoraClient:
    """The payout API client of ``market``'s provider account (one per account)."""
    return _vexora(get_settings().account(market))


@cache
def metrics() -> Metrics:
    """The process's one Metrics: it batches what it records (worker.coordination.metrics) and
    writes it out a second after its last write, at the end of every task, after
    every webhook answer, and when the process exits (a CLI command)."""
    built = Metrics(redis_client(), prefix=get_settings().key_prefix, flush_every=1.0)
    atexit.register(_flush_at_exit, built, os.getpid())
    return built


def _flush_at_exit(built: Metrics, pid: int) -> None:
    # Not in a forked child: its copy holds what the parent had not yet written.
    if os.getpid() == pid:
        built.flush()


@cache
def details() -> DetailsClient | NoDetailsApi:
    """The details client, its bearer token shared by the whole cluster through Redis;
    without the details API's settings, one that asks nothing (worker.provider.details)."""
    from worker.provider.details import DetailsClient
    from worker.provider.no_details import NoDetailsApi
    from worker.provider.token import TokenCache, TokenFetcher

    settings = get_settings()
    if not settings.details_configured:
        return NoDetailsApi()
    fetch = TokenFetcher.from_settings(settings)

    def fetch_token() -> tuple[str, float]:
        metrics().token_refresh()
        return fetch()

    tokens = TokenCache(
        redis_client(),
        fetch_token,
        key=keys.oauth_token(settings.key_prefix),
        lock_timeout=settings.token_lock_timeout,
        wait_timeout=settings.token_lock_timeout + 5.0,  # a waiter outlasts one fetch
    )
    return DetailsClient.from_settings(settings, tokens)


@cache
def in_flight() -> InFlightLookups:
    """The lookup-in-flight markers, and the one way to request lookups."""
    from worker.coordination.inflight import InFlightLookups

    return InFlightLookups.from_settings(redis_client(), publisher().lookups, get_settings())


@cache
def lookups() -> Lookups:
    from worker.coordination.ratelimit import RateLimiter
    from worker.flows.deadline import ReviewDeadline
    from worker.flows.lookup import Lookups

    settings = get_settings()
    return Lookups(
        ledger(),
        vexora,
        details(),
        RateLimiter.for_details(redis_client(), settings),
        in_flight(),
        ReviewDeadline(ledger(), settings.review_after),
        claim_lease=settings.claim_lease,
        # Recovery runs inside a submit task, whose time limit derives from its budget.
        recover_budget=settings.submit_budget,
        # An order a lookup puts back to QUEUED is a submission again.
        publish_submissions=publisher().resubmissions,
        no_record_grace=settings.no_record_grace,
        abandoned_grace=settings.abandoned_claim_grace,
    )


@cache
def claim_heartbeat() -> ClaimHeartbeat:
    """The process's one heartbeat on the claims it holds (every submitter's)."""
    from worker.flows.heartbeat import ClaimHeartbeat

    return ClaimHeartbeat(ledger(), ttl=get_settings().lease_ttl)


@cache
def _submitter(account: Account) -> Submitter:
    """Submits the orders of one provider account: its client, limiter and pause switch."""
    from worker.coordination.breaker import Breaker
    from worker.coordination.ratelimit import RateLimiter
    from worker.flows.submit import Submitter

    settings = get_settings()
    return Submitter(
        ledger(),
        _vexora(account),
        RateLimiter.for_submit(redis_client(), settings, account),
        pause_switch(account),
        claim_lease=settings.claim_lease,
        recover=lookups().recover,
        metrics=metrics(),
        breaker=Breaker(
            redis_client(),
            settings.key_prefix,
            account.name,
            rejections=settings.breaker_rejections,
            window=settings.breaker_window,
        ),
        systemic_codes=settings.systemic_codes,
        concurrency=settings.submit_concurrency,
        heartbeat=claim_heartbeat(),
    )


@cache
def submitter() -> Submitter | MarketSubmitters:
    """Submits any orders, each through the submitter of its market's account.

    With one account for every market (the plain ``VEXORA_*`` alone), that account's
    submitter itself: no order's market needs reading. Else the orders of a market
    without an account are left QUEUED (MarketSubmitters).
    """
    from schemas import MARKETS
    from worker.flows.market_submitters import MarketSubmitters

    accounts = get_settings().accounts
    if len(accounts) == 1 and set(accounts[0].markets) == set(MARKETS):
        return _submitter(accounts[0])
    return MarketSubmitters(ledger(), lambda market: _submitter(get_settings().account(market)))


@cache
def reconciler() -> Reconciler:
    from worker.coordination.ratelimit import RateLimiter
    from worker.flows.reconcile import Reconciler
    from worker.flows.walk import ListWalk
    from worker.provider.details import DetailsClient

    settings = get_settings()
    details_api = details()
    # The paged list needs the details API: without it, single lookups only.
    walk = None
    if isinstance(details_api, DetailsClient):
        walk = ListWalk(
            details_api,
            RateLimiter.for_details(redis_client(), settings),
            lookups().apply_details,
            ledger(),
            redis_client(),
            metrics(),
            prefix=settings.key_prefix,
            # Within a pass, as a lookup task's wait; a cursor left by passes that
            # stopped is forgotten after a few intervals (the next walk starts afresh).
            budget=settings.lookup_budget,
            cursor_ttl=10 * settings.reconcile_every,
        )
    return Reconciler(
        ledger(),
        in_flight(),
        pause_switch(),
        leases(),
        redis_client(),
        settings,
        # Everything the sweeper publishes is a submission again.
        publish_submissions=publisher().resubmissions,
        submit_queue_length=publisher().submit_queue_length,
        walk=walk,
    )


@cache
def producer() -> Producer:
    from worker.flows.producer import Producer

    budget = get_settings().lookup_budget
    return Producer(
        ledger(),
        get_settings(),
        publish=publisher().submissions,
        sign=lambda market: vexora(market).signed_body,
        # A retry pays an old payout again: only once the provider confirms it failed.
        ask=lambda order: lookups().ask_both(order, budget),
        approvals=approvals(),
    )


@cache
def batch_controls() -> Controls:
    """Cancel, pause and resume, on the cluster-wide pause switch."""
    from worker.flows.controls import Controls

    return Controls(
        ledger(),
        publisher().submissions,
        pause_switch(),
        operator=get_settings().operator,
        origin=origin(),
    )


@cache
def approvals() -> Approvals:
    """The policy's approvals and releases; the policy in force is recorded in the audit
    trail when it is not the one recorded last."""
    from worker.flows.approvals import Approvals

    settings = get_settings()
    built = Approvals(
        ledger(),
        lambda market: vexora(market).balance(),
        publisher().submissions,
        policy=settings.policy,
        operator=settings.operator,
        origin=origin(),
        require_login=settings.approvals_require_login,
    )
    built.record_policy()
    return built


@cache
def accounts() -> Accounts:
    """The console's users and their sign-ins."""
    from worker.flows.users import Accounts

    return Accounts(ledger())


@cache
def decisions() -> Decisions:
    """REVIEW orders and a person's decisions, checked with the provider as a lookup asks."""
    from worker.flows.decisions import Decisions

    settings = get_settings()
    return Decisions(
        ledger(),
        lambda order: lookups().ask_both(order, settings.lookup_budget),
        settings.no_record_grace,
        origin=origin(),
    )


@cache
def feed() -> Feed:
    """The application's event feed (its horizon's ticks are kept per process)."""
    from worker.outbox import Feed

    return Feed(pool())


@cache
def deliveries() -> Deliveries:
    from worker.outbox import Deliveries

    return Deliveries(pool(), feed())


@cache
def sender() -> Sender | None:
    """The webhook sender to APP_WEBHOOK_URL; None when it is not set."""
    from worker.outbox import Sender

    settings = get_settings()
    if settings.app_webhook_url is None:
        return None
    return Sender(deliveries(), settings.app_webhook_url, settings.app_webhook_secret)


_BUILT = (publisher, redis_client, pool, ledger, pause_switch, metrics, _vexora, details,
          leases, in_flight, lookups, claim_heartbeat, _submitter, submitter, reconciler, producer,
          batch_controls, approvals, accounts, decisions, feed, deliveries, sender)  # fmt: skip


def _forget_built() -> None:
    for built in _BUILT:
        built.cache_clear()


# A forked child (a Celery prefork process) never uses what its parent built: a pool's
# connections and threads do not survive fork(), and closing them would end the
# parent's sessions.
os.register_at_fork(after_in_child=_forget_built)


def reset() -> None:
    """Close the pool, forget every cached object and re-read the environment (tests,
    demo, benchmarks)."""
    import importlib

    import kombu.pools

    import celeryconfig
    from worker.celery.app import app

    global _front
    _front = None  # the console's app sets it again when built
    if pool.cache_info().currsize:
        pool().close()
    atexit.unregister(_flush_at_exit)  # what the forgotten Metrics holds is dropped
    get_settings.cache_clear()
    _forget_built()
    app.config_from_object(importlib.reload(celeryconfig), force=True)
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    # kombu keeps producer pools per broker URL: one for the same URL would still
    # hold the connections just closed.
    kombu.pools.reset()
