"""Every setting, read from the environment (and an optional ``.env``) into one typed object.

This is the one place settings are read: no other module looks at the environment
(only the dev tooling, building the environment of the processes it starts), and the
defaults and the limits derived from them are here.
"""

from __future__ import annotations

import getpass
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from dotenv import load_dotenv
from psycopg.conninfo import conninfo_to_dict

from schemas import MARKETS
from worker.core import accounts
from worker.core.accounts import Account, MarketAccount
from worker.core.backoff import MAX_DELAY, NO_RECORD_GRACE
from worker.core.exceptions import ConfigError, UnknownMarket

# The first part of every Redis key this system writes (DISBURSE_KEY_PREFIX sets another).
KEY_PREFIX = "disburse"
# Top-level codes of a status query that mean "no such order" (NOT_FOUND_CODES): the
# provider documents none; 4004 is our sandbox's. Any other code is "not known".
DEFAULT_NOT_FOUND_CODES: frozenset[str] = frozenset({"4004"})
# The top-level codes our sandbox answers a systemic refusal with (worker.provider.vexora): bad
# signature, unknown merchant, IP not allowed. A real provider's may differ: SYSTEMIC_CODES.
DEFAULT_SYSTEMIC_CODES = frozenset({"4001", "4002", "4003"})

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# Celery's brokers (kombu transports) that this system is run with.
_BROKER_SCHEMES = (*_REDIS_SCHEMES, "amqp", "amqps", "pyamqp", "sentinel", "sqs")
# VEXORA_<MARKET>_<SETTING>: one market's own provider account.
_MARKET_VARIABLE = re.compile(r"VEXORA_([A-Za-z0-9]+)_(BASE_URL|MERCHANT_NO|APP_SECRET|RATE_LIMIT)")
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
    "REDIS_URL": ("the Redis server", "redis://host:6379/0"),
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
    reconcile_every: float = 30.0
    reconcile_after: float = 60.0
    review_after: float = 86400.0
    sweep_after: float = 300.0
    lookup_budget: float = 30.0  # as submit_budget, for a lookup task (LOOKUP_BUDGET)
    # How long a FAILED order keeps its payload, so that it can be retried (worker.flows.retention).
    failed_payload_retention: float = 7 * 86400.0
    # How long a batch's idempotency key returns that batch (worker.idempotency; 0: off).
    idempotency_window: float = 30 * 86400.0
    # Who decides REVIEW orders from this process: DISBURSE_OPERATOR, else the login name.
    operator: str = "unknown"
    # Pending orders from which a pass walks the paged list instead of asking about each
    # (RECONCILE_WALK_AT; 0: never). Why 50: worker.flows.walk.
    reconcile_walk_at: int = 50
    # The status query's codes for "no such order" (worker.provider.vexora), and how long apart
    # two such answers must be before a payout that may have been sent is resubmitted,
    # retried or decided FAILED (worker.flows.lookup, worker.core.confirm).
    not_found_codes: frozenset[str] = DEFAULT_NOT_FOUND_CODES
    no_record_grace: float = NO_RECORD_GRACE

    # /metrics and /healthz on a listener of their own (worker.web.listeners); None: only on
    # the provider's listener, and there only to clients on this machine.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
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
        """Hard limit for any task: the longer budget, one more HTTP call, and margin."""
        return max(self.submit_budget, self.lookup_budget) + sum(self.timeouts) + 30.0

    @property
    def claim_lease(self) -> float:
        """After this long a SUBMITTING order's worker is certainly gone (killed at the limit)."""
        return self.task_time_limit + 10.0

    @property
    def visibility_timeout(self) -> int:
        """Whole seconds after which the Redis broker hands an unacknowledged message out again.

        Such a message's worker died, or its ack could not reach a Redis that was down.
        So it must outlast the longest a live worker holds a message: its countdown (at
        most retry.MAX_DELAY), a wait for a free process (at most one task) and its own
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


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    """Seconds, from a number of seconds or a number with a unit: ``7d``, ``12h``, ``30m``;
    zero is allowed."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    match = _DURATION.match(raw)
    if match is None:
        raise ConfigError(
            f"{name}={raw!r} is not a duration such as 604800 (seconds), 7d, 12h or 30m"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    if not raw.strip().isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def _codes(env: Mapping[str, str], name: str, default: frozenset[str]) -> frozenset[str]:
    """Provider codes, comma-separated (``4001,4002,4003``); ``none``: not one. ``0000``
    is the accepted answer, never one of them."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() == "none":
        return frozenset()
    codes = [code.strip() for code in raw.split(",")]
    bad = next((code for code in codes if not _CODE.match(code) or code == "0000"), None)
    if bad is not None:
        raise ConfigError(
            f"{name}={raw!r}: {bad!r} is not a provider code; expected codes separated by "
            "commas, such as 4001,4002,4003, or none (0000 is the accepted answer)"
        )
    return frozenset(codes)


def _login_name() -> str:
    """The login name of the user running this process, for the operator's events."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such variable and no passwd entry (some containers)
        return "unknown"


def _optional_rate(env: Mapping[str, str], name: str) -> Rate | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return Rate.parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _rate(env: Mapping[str, str], name: str, default: Rate) -> Rate:
    return _optional_rate(env, name) or default


def _optional_url(env: Mapping[str, str], name: str, *, strip: bool = True) -> str | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value is not repeated: a URL may carry credentials.
        raise ConfigError(f"{name} is not an http(s) URL such as https://host/id")
    return raw.rstrip("/") if strip else raw


def _server_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    """``name``'s URL when its scheme is one of ``schemes`` and its port a number; "" when
    it is not set (see ``Settings.database_url``).

    Checked here so that a typo is one line naming the variable, not a traceback from
    the client library at first use. The value is never repeated: it may carry a password.
    """
    raw = env.get(name) or ""
    if not raw:
        return ""
    example = f"{schemes[0]}://host:port/..."
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{name} has a malformed host or port; expected {example}") from None
    if parts.scheme not in schemes or "://" not in raw:
        found = f"it starts with {parts.scheme}://" if "://" in raw else "it has no scheme"
        raise ConfigError(
            f"{name} must start with {', '.join(s + '://' for s in schemes)} ({found}), "
            f"e.g. {example}"
        )
    return raw


def _database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL: a postgresql:// URL, or a libpq ``key=value`` connection string."""
    raw = env.get("DATABASE_URL") or ""
    if "://" not in raw and "=" in raw:
        try:
            conninfo_to_dict(raw)
        except psycopg.ProgrammingError:
            raise ConfigError(
                "DATABASE_URL is not a valid 'key=value' connection string "
                "nor a URL such as postgresql://user:password@host:5432/disburse"
            ) from None
        return raw
    return _server_url(env, "DATABASE_URL", ("postgresql", "postgres"))


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a yes/no value: use 1 or 0 (true/false)")


def _path(env: Mapping[str, str], name: str, default: str, *fields: str) -> str:
    """A URL path template: starts with / and names no placeholder but ``fields``."""
    raw = env.get(name) or default
    try:
        raw.format(**dict.fromkeys(fields, "x"))
    except (KeyError, IndexError, ValueError):
        names = ", ".join("{" + f + "}" for f in fields)
        raise ConfigError(f"{name} may use only the placeholders {names}") from None
    if not raw.startswith("/"):
        raise ConfigError(f"{name} must be a path starting with /, e.g. {default}")
    return raw


def _app_webhook(env: Mapping[str, str]) -> tuple[str | None, str]:
    """APP_WEBHOOK_URL as given (its path is the application's), and its secret."""
    url = _optional_url(env, "APP_WEBHOOK_URL", strip=False)
    secret = env.get("APP_WEBHOOK_SECRET") or ""
    if url is not None and not secret:
        raise ConfigError("APP_WEBHOOK_SECRET must be set when APP_WEBHOOK_URL is: it signs events")
    return url, secret


def _details(env: Mapping[str, str]) -> dict[str, str]:
    """The details API's settings, by field name: all set, or all "" (none set)."""
    values = {name: env.get(name) or "" for name in DETAILS_SETTINGS}
    values["DETAILS_BASE_URL"] = _optional_url(env, "DETAILS_BASE_URL") or ""
    missing = [name for name, value in values.items() if not value]
    if missing and len(missing) < len(values):
        raise ConfigError(
            f"the details API needs every one of {', '.join(DETAILS_SETTINGS)} (or none: "
            f"reconciliation then asks the payout API's status query only); not set: "
            f"{', '.join(missing)}"
        )
    return {name.lower(): value for name, value in values.items()}


def _market_accounts(env: Mapping[str, str]) -> dict[str, MarketAccount]:
    """What each market's ``VEXORA_<MARKET>_*`` set; a market that does not exist is an error."""
    for name, value in env.items():
        match = _MARKET_VARIABLE.fullmatch(name)
        if match and value and match.group(1) not in MARKETS:
            raise ConfigError(f"{name}: {match.group(1)!r} is not a market ({', '.join(MARKETS)})")
    found: dict[str, MarketAccount] = {}
    for market in MARKETS:
        own = MarketAccount(
            base_url=_optional_url(env, f"VEXORA_{market}_BASE_URL"),
            merchant_no=env.get(f"VEXORA_{market}_MERCHANT_NO") or None,
            app_secret=env.get(f"VEXORA_{market}_APP_SECRET") or None,
            rate_limit=_optional_rate(env, f"VEXORA_{market}_RATE_LIMIT"),
        )
        if own != MarketAccount():
            found[market] = own
    return found


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    d = Settings()

    def text(name: str, default: str) -> str:
        return env.get(name) or default

    app_webhook_url, app_webhook_secret = _app_webhook(env)
    settings = Settings(
        database=_database_url(env),
        redis=_server_url(env, "REDIS_URL", _REDIS_SCHEMES),
        broker_url=_server_url(env, "CELERY_BROKER_URL", _BROKER_SCHEMES),
        key_prefix=text("DISBURSE_KEY_PREFIX", d.key_prefix),
        vexora_base_url=_optional_url(env, "VEXORA_BASE_URL") or d.vexora_base_url,
        vexora_merchant_no=text("VEXORA_MERCHANT_NO", d.vexora_merchant_no),
        vexora_app_secret=text("VEXORA_APP_SECRET", d.vexora_app_secret),
        vexora_rate_limit=_rate(env, "VEXORA_RATE_LIMIT", d.vexora_rate_limit),
        vexora_markets=_market_accounts(env),
        **_details(env),
        details_path=_path(env, "DETAILS_PATH", d.details_path, "account_id", "transaction_id"),
        details_list_path=_path(env, "DETAILS_LIST_PATH", d.details_list_path, "account_id"),
        details_rate_limit=_rate(env, "DETAILS_RATE_LIMIT", d.details_rate_limit),
        notify_url=_optional_url(env, "NOTIFY_URL", strip=False) or d.notify_url,
        notify_url_set=bool(env.get("NOTIFY_URL")),
        allow_unsigned_webhooks=_flag(env, "ALLOW_UNSIGNED_WEBHOOKS"),
        connect_timeout=_float(env, "HTTP_CONNECT_TIMEOUT", d.connect_timeout),
        read_timeout=_float(env, "HTTP_READ_TIMEOUT", d.read_timeout),
        submit_budget=_float(env, "SUBMIT_BUDGET", d.submit_budget),
        reconcile_every=_float(env, "RECONCILE_EVERY", d.reconcile_every),
        reconcile_after=_float(env, "RECONCILE_AFTER", d.reconcile_after),
        review_after=_float(env, "REVIEW_AFTER", d.review_after),
        sweep_after=_float(env, "SWEEP_AFTER", d.sweep_after),
        lookup_budget=_float(env, "LOOKUP_BUDGET", d.lookup_budget),
        app_webhook_url=app_webhook_url,
        app_webhook_secret=app_webhook_secret,
        reconcile_walk_at=_count(env, "RECONCILE_WALK_AT", d.reconcile_walk_at),
        failed_payload_retention=_duration(
            env, "FAILED_PAYLOAD_RETENTION", d.failed_payload_retention
        ),
        idempotency_window=_duration(env, "IDEMPOTENCY_WINDOW", d.idempotency_window),
        operator=text("DISBURSE_OPERATOR", "") or _login_name(),
        metrics_port=_port(env, "METRICS_PORT"),
        metrics_host=text("METRICS_HOST", d.metrics_host),
        pg_statement_timeout=_duration(env, "PG_STATEMENT_TIMEOUT", d.pg_statement_timeout),
        pg_lock_timeout=_duration(env, "PG_LOCK_TIMEOUT", d.pg_lock_timeout),
        pg_idle_in_transaction_timeout=_duration(
            env, "PG_IDLE_IN_TRANSACTION_TIMEOUT", d.pg_idle_in_transaction_timeout
        ),
        not_found_codes=_codes(env, "NOT_FOUND_CODES", d.not_found_codes),
        no_record_grace=_float(env, "NO_RECORD_GRACE", d.no_record_grace),
        systemic_codes=_codes(env, "SYSTEMIC_CODES", d.systemic_codes),
        breaker_rejections=_count(env, "BREAKER_REJECTIONS", d.breaker_rejections),
        breaker_window=_float(env, "BREAKER_WINDOW", d.breaker_window),
    )
    settings.accounts  # noqa: B018 - an account configured two ways fails here, at load
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; a ``.env`` in the working directory fills gaps.

    Only there: a ``.env`` in a folder above may be another project's, and would point
    this one at its servers and accounts.
    """
    env_file = Path.cwd() / ".env"
    looked_in = f"the environment and {env_file}"
    if env_file.is_file():
        load_dotenv(env_file, override=False)
    else:
        looked_in += " (no such file)"
    return replace(load_settings(), looked_in=looked_in)
