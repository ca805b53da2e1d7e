"""Every Redis key this system writes, built here and nowhere else.

Redis holds no payout state (PostgreSQL is the ledger): only what coordinates the
workers. Every key starts with the prefix of ``Settings.key_prefix``
(``DISBURSE_KEY_PREFIX``), so several deployments can share one Redis. The module that
owns a key says what its value means; wiping them all delays payouts, never loses one.
"""

from __future__ import annotations


def paused(prefix: str) -> str:
    """The cluster-wide stop switch (worker.coordination.pause): the reason, while it is set."""
    return f"{prefix}:paused"


def paused_account(prefix: str, account: str) -> str:
    """One provider account's stop switch (worker.coordination.pause)."""
    return f"{paused(prefix)}:{account}"


def breaker(prefix: str, account: str) -> str:
    """One provider account's recent first attempts refused at the top level
    (worker.coordination.breaker)."""
    return f"{prefix}:breaker:{account}"


def rate_limit(prefix: str, name: str) -> str:
    """A cluster-wide limiter's schedule (worker.coordination.ratelimit), e.g. ``submit:AR``,
    ``details``."""
    return f"{prefix}:ratelimit:{name}"


def oauth_token(prefix: str) -> str:
    """The shared bearer token (worker.provider.token); its lock and back-off keys extend it."""
    return f"{prefix}:oauth:token"


def submit_leases(prefix: str) -> str:
    """The sorted set of leased QUEUED orders: tradeNo -> deadline (worker.coordination.leases)."""
    return f"{prefix}:submit:leases"


def lookup_in_flight(prefix: str, trade_no: str) -> str:
    """An order's "lookup outstanding" marker (worker.coordination.inflight)."""
    return f"{prefix}:reconcile:inflight:{trade_no}"


def reconcile(prefix: str, name: str) -> str:
    """The reconcile pass's ``lock`` and ``gate`` (worker.flows.reconcile)."""
    return f"{prefix}:reconcile:{name}"


def metrics(prefix: str) -> str:
    """The cluster-wide metrics hash (worker.coordination.metrics)."""
    return f"{prefix}:metrics"
