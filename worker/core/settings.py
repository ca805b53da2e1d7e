"""The settings' type: every setting with its default, and the limits derived from them.

Read from the environment by :mod:`worker.core.config`; nothing here reads it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from schemas import MARKETS
from worker.core import accounts
from worker.core.accounts import Account, MarketAccount
from worker.core.defaults import LEASE_TTL, MAX_DELAY, NO_RECORD_GRACE, QUERY_DELAY
from worker.core.exceptions import ConfigError, UnknownMarket
from worker.core.policy import Policy

# The first part of every Redis key this system writes (DISBURSE_KEY_PREFIX sets another).
KEY_PREFIX = "disburse"
# Top-level codes of a status query that mean "no such order" (NOT_FOUND_CODES): the
# provider documents none; 4004 is our sandbox's. Any other code is "not known".
DEFAULT_NOT_FOUND_CODES: frozenset[str] = frozenset({"4004"})
# The top-level codes our sandbox answers a systemic refusal with (worker.provider.answers): bad
# signature, unknown merchant, IP not allowed. A real provider's may differ: SYSTEMIC_CODES.
DEFAULT_SYSTEMIC_CODES = frozenset({"4001", "4002", "4003"})

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}

# The details API's settings: all of them, or none (reconciliation then asks the payout
# API's status query only).
DETAILS_SETTINGS = (
    "DETAILS_BASE_URL",
    "DETAILS_API_KEY",
    "DETAILS_CLIENT_ID",
    "DETAILS_CLIENT_SECRET",
    "DETAILS_ACCOUNT_ID",
)
# Server URLs: what each is for, and an example, for the error when one is not set.
_SERVERS = {
    "DATABASE_URL": ("the ledger's PostgreSQL", "postgresql://user:password@host:5432/disburse"),
    "REDIS_URL": (
        "the Redis server (or its Sentinels)",
        "redis://host:6379/0 or sentinel://h1:26379/0;sentinel://h2:26379/0",
    ),
}
# The notifyUrl sent when NOTIFY_URL is not set (a warning at start says so).
DEFAULT_NOTIFY_URL = "https://127.0.0.1:8701/notify"


@dataclass(frozen=True)
class Rate:
    """Requests allowed per period, parsed from strings such as ``20/s`` or ``600/m``."""

    count: float
    period: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _RATE.match(text)
        if not match or float(match.group(1)) <= 0:
            raise ConfigError(f"rate {text!r} is not like '20/s', '600/m' or '5'")
        return cls(float(match.group(1)), _PERIODS[match.group(2) or "s"])

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.per_second:g}/s"


@dataclass(frozen=True)
class Settings:
    # No credential or server address has a built-in value: "" is not set. The servers
    # are read through ``database_url`` and ``redis_url``, which raise ConfigError naming
    # the variable and where it was looked for (``looked_in``) when it is not set.
    # Server URLs stay out of reprs: a URL may carry the password.
    database: str = field(default="", repr=False)
    redis: str = field(default="", repr=False)
    broker_url: str = field(default="", repr=False)
    # The master the Sentinels of a sentinel:// REDIS_URL (or broker URL) watch.
    redis_sentinel_master: str = "mymaster"
    key_prefix: str = KEY_PREFIX
    looked_in: str = "the environment"

    # A market is available when its account is complete (``accounts``).
    vexora_base_url: str = ""
    vexora_merchant_no: str = ""
    vexora_app_secret: str = field(default="", repr=False)
    vexora_rate_limit: Rate = Rate(20)
    # Markets with an account of their own (any VEXORA_<MARKET>_* set); see ``accounts``.
    vexora_markets: Mapping[str, MarketAccount] = field(default_factory=dict)

    # All set, or none (``details_configured``).
    details_base_url: str = ""
    details_path: str = "/api/v1.0/disbursements/{account_id}/{transaction_id}"
    details_list_path: str = "/api/v1.0/disbursement/{account_id}"
    details_api_key: str = field(default="", repr=False)
    details_client_id: str = ""
    details_client_secret: str = field(default="", repr=False)
    details_account_id: str = ""
    details_rate_limit: Rate = Rate(20)

    # Only the deployment knows its public URL. The default is the Procfile's `web` on
    # this machine (HTTPS, as JP and KH require); it is not a credential, so it has one,
    # and every process warns at start while NOTIFY_URL is not set (``notify_url_set``).
    notify_url: str = DEFAULT_NOTIFY_URL
    notify_url_set: bool = False
    allow_unsigned_webhooks: bool = False

    # (connect, read) seconds of every HTTP call (``timeouts``): the connect timeout just
    # over a multiple of 3 s, TCP's default packet retransmission window.
    connect_timeout: float = 3.05
    read_timeout: float = 15.0

    # A submit task hands the rest of its chunk on after this long, which bounds every
    # task's run time and so the claim lease and Celery's time limits derived from it.
    submit_budget: float = 30.0
    # POSTs a submit task keeps in flight at once (SUBMIT_CONCURRENCY; worker.flows.submit):
    # enough to reach a 100/s limit from one process at 250 ms a POST (docs/architecture.md).
    submit_concurrency: int = 32
    reconcile_every: float = 30.0
    reconcile_after: float = 60.0
    review_after: float = 86400.0
    sweep_after: float = 300.0
    lookup_budget: float = 30.0  # as submit_budget, for a lookup task (LOOKUP_BUDGET)
    # How long a FAILED order keeps its payload, so that it can be retried (worker.flows.retention).
    failed_payload_retention: float = 7 * 86400.0
    # How long a batch's idempotency key returns that batch (worker.ledger.idempotency; 0: off).
    idempotency_window: float = 30 * 86400.0
    # Who acts from this process (enqueue, approve, resolve, ...): DISBURSE_OPERATOR, else
    # the login name; recorded in the audit trail.
    operator: str = "unknown"
    # Who may release how much (DISBURSE_POLICY; worker.core.policy); None: no policy.
    policy: Policy | None = None
    # Approvals only from an authenticated console session, never a name typed on a
    # command line (APPROVALS_REQUIRE_LOGIN).
    approvals_require_login: bool = False
    # Pending orders from which a pass walks the paged list instead of asking about each
    # (RECONCILE_WALK_AT; 0: never). Why 50: worker.flows.walk.
    reconcile_walk_at: int = 50
    # The status query's codes for "no such order" (worker.provider.answers), and how long apart
    # two such answers must be before a payout that may have been sent is resubmitted,
    # retried or decided FAILED (worker.flows.lookup, worker.core.confirm).
    not_found_codes: frozenset[str] = DEFAULT_NOT_FOUND_CODES
    no_record_grace: float = NO_RECORD_GRACE
    # Seconds after its POST an UNKNOWN order is asked about (QUERY_DELAY), and a submit
    # or lookup task's lease on its orders, or a claim's (worker.flows.heartbeat), lasts
    # unless renewed (LEASE_TTL; worker.coordination.leases): worker.core.defaults says
    # why these values.
    query_delay: float = QUERY_DELAY
    lease_ttl: float = LEASE_TTL

    # /metrics and /healthz on a listener of their own (worker.web.listeners); None: only on
    # the provider's listener, and there only to clients on this machine.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # The operations console (`disburse console`, worker.console): where it listens; a
    # header naming the signed-in user, believed only from these proxies' addresses.
    console_port: int = 8702
    console_host: str = "127.0.0.1"
    console_trusted_header: str | None = None
    console_trusted_proxies: frozenset[str] = frozenset()
    # Limits of every pooled PostgreSQL session (worker.db.session), seconds; 0: none.
    pg_statement_timeout: float = 60.0
    pg_lock_timeout: float = 10.0
    pg_idle_in_transaction_timeout: float = 60.0
    # A submit refused with one of these top-level codes pauses the provider account
    # (SYSTEMIC_CODES): the sandbox's bad signature, unknown merchant, IP not allowed.
    systemic_codes: frozenset[str] = DEFAULT_SYSTEMIC_CODES
    # The circuit breaker (worker.coordination.breaker): this many first attempts of one account
    # refused at the top level within breaker_window seconds pause the account
    # (BREAKER_REJECTIONS, 0: never; BREAKER_WINDOW).
    breaker_rejections: int = 5
    breaker_window: float = 30.0

    # Where and how outcomes are sent to the application (worker.outbox); None: not sent.
    # Out of reprs: the URL may carry credentials, and the secret signs every event.
    app_webhook_url: str | None = field(default=None, repr=False)
    app_webhook_secret: str = field(default="", repr=False)

    @property
    def database_url(self) -> str:
        """DATABASE_URL; ConfigError when it is not set."""
        return self.database or self._unset("DATABASE_URL")

    @property
    def redis_url(self) -> str:
        """REDIS_URL; ConfigError when it is not set."""
        return self.redis or self._unset("REDIS_URL")

    def _unset(self, name: str) -> str:
        what, example = _SERVERS[name]
        raise ConfigError(
            f"{name} is not set (looked in {self.looked_in}): set it to {what}, e.g. {example}"
        )

    @property
    def details_configured(self) -> bool:
        """Whether the details API can be used (its settings are all set, or none is)."""
        return bool(self.details_base_url)

    @cached_property
    def accounts(self) -> tuple[Account, ...]:
        """The provider account of every available market (worker.core.accounts), each with
        the markets it serves; the others are ``unavailable``.

        Raises ConfigError when two markets name the same account (base URL and
        merchant number) with different secrets or rate limits.
        """
        return accounts.resolve(self.vexora_markets, self._plain, self.vexora_rate_limit)

    @property
    def _plain(self) -> MarketAccount:
        """What the plain ``VEXORA_*`` set: every market's fallback."""
        return MarketAccount(self.vexora_base_url, self.vexora_merchant_no, self.vexora_app_secret)

    @property
    def unavailable(self) -> tuple[str, ...]:
        """The markets without a complete account: nothing is enqueued or sent for them."""
        served = {market for account in self.accounts for market in account.markets}
        return tuple(market for market in MARKETS if market not in served)

    def account(self, market: str) -> Account:
        """The provider account that pays out in ``market``.

        Raises MarketUnavailable (a ConfigError) naming the settings to set when the
        market has no complete account, UnknownMarket for a code that is no market.
        """
        for account in self.accounts:
            if market in account.markets:
                return account
        if market not in MARKETS:
            raise UnknownMarket(market, MARKETS)
        raise accounts.unavailable(market, self.vexora_markets, self._plain)

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def task_time_limit(self) -> float:
        """Hard limit for any task: the longer budget, one more HTTP call (no POST starts
        after a submit task's budget, and each ends within the client's total deadline,
        the sum of ``timeouts``), and margin."""
        return max(self.submit_budget, self.lookup_budget) + sum(self.timeouts) + 30.0

    @property
    def claim_lease(self) -> float:
        """After this long a SUBMITTING order's worker is certainly gone (killed at the
        limit): the rule for a claim without a lease of its own (migration 0011)."""
        return self.task_time_limit + 10.0

    @property
    def abandoned_claim_grace(self) -> float:
        """Seconds after an abandoned claim's lease expired from which the provider's "no
        record" of it is believed (worker.flows.lookup). A POST of it started a renewal
        interval (a third of LEASE_TTL) before that at the latest (its holder starts one
        only then: worker.flows.heartbeat), reached the provider within the connect
        timeout, and shows within QUERY_DELAY."""
        return max(0.0, self.connect_timeout + self.query_delay - self.lease_ttl / 3)

    @property
    def visibility_timeout(self) -> int:
        """Whole seconds after which the Redis broker hands an unacknowledged message out again.

        Such a message's worker died, or its ack could not reach a Redis that was down.
        So it must outlast the longest a live worker holds a message: its countdown (at
        most defaults.MAX_DELAY), a wait for a free process (at most one task) and its own
        run (at most the time limit), with a minute to spare. It should not be much
        longer, as it bounds how long such a message waits; the orders of a dead submit
        task are taken up sooner, through their leases (worker.coordination.leases).
        """
        return math.ceil(MAX_DELAY + 2 * self.task_time_limit + 60.0)

    @property
    def token_lock_timeout(self) -> float:
        """How long one process may hold the OAuth refresh lock: longer than a fetch can
        take, or a second process starts fetching while the first is still at it."""
        return sum(self.timeouts) + 5.0

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) for every HTTP call the workers make."""
        return (self.connect_timeout, self.read_timeout)
