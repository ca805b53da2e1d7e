"""Every setting, read from the environment (and an optional ``.env``) into one typed
object (:class:`worker.core.settings.Settings`, which holds the defaults and the limits
derived from them).

This is where settings are read. Besides it only the HTTP transport, for requests' own
proxy and CA bundle variables (worker.provider.http_client), and the dev tooling
(worker.dev), which starts processes with this one's environment and its own
additions, look at the environment.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from dotenv import load_dotenv
from psycopg.conninfo import conninfo_to_dict

from schemas import MARKETS
from worker.core.accounts import MarketAccount
from worker.core.exceptions import ConfigError
from worker.core.policy_file import load_policy
from worker.core.settings import (
    DETAILS_SETTINGS,
    Rate,
    Settings,
)

_REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")
# Celery's brokers (kombu transports) that this system is run with.
_BROKER_SCHEMES = (*_REDIS_SCHEMES, "amqp", "amqps", "pyamqp", "sqs")
# kombu's and Celery's separator between the Sentinels of one URL.
_SENTINEL_SEPARATOR = ";"
# VEXORA_<MARKET>_<SETTING>: one market's own provider account.
_MARKET_VARIABLE = re.compile(r"VEXORA_([A-Za-z0-9]+)_(BASE_URL|MERCHANT_NO|APP_SECRET|RATE_LIMIT)")


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


def _count(env: Mapping[str, str], name: str, default: int, *, least: int = 0) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < least:
        if least == 0:
            raise ConfigError(f"{name} must not be negative, got {raw!r}")
        raise ConfigError(f"{name} must be at least {least}, got {raw!r}")
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


def _addresses(env: Mapping[str, str], name: str) -> frozenset[str]:
    """IP addresses, comma-separated (the proxies whose header the console believes)."""
    found = set()
    for part in (env.get(name) or "").split(","):
        if not part.strip():
            continue
        try:
            found.add(str(ipaddress.ip_address(part.strip())))
        except ValueError:
            raise ConfigError(f"{name}: {part.strip()!r} is not an IP address") from None
    return frozenset(found)


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


def _redis_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    """A Redis URL; a ``sentinel://`` one may name several Sentinels as kombu does:
    ``sentinel://[:password@]host:port[;sentinel://host:port...][/db]``.

    kombu and Celery read the database of the first part only: it is given to every
    part, so that the broker, the results and the app use the one named wherever it is.
    """
    raw = env.get(name) or ""
    if not raw.startswith("sentinel://"):
        return _server_url(env, name, schemes)
    sentinels = raw.split(_SENTINEL_SEPARATOR)
    for sentinel in sentinels:
        _server_url({name: sentinel}, name, ("sentinel",))
        if not urlsplit(sentinel).hostname:
            raise ConfigError(
                f"{name} names a Sentinel without a host; expected sentinel://host:port"
            )
    databases = {urlsplit(s).path.strip("/") for s in sentinels} - {""}
    if len(databases) > 1:
        raise ConfigError(
            f"{name} names two databases; name one, e.g. sentinel://h1:26379;sentinel://h2:26379/0"
        )
    if not databases:
        return raw
    path = f"/{databases.pop()}"
    return _SENTINEL_SEPARATOR.join(urlsplit(s)._replace(path=path).geturl() for s in sentinels)


def _database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL: a postgresql:// URL (libpq's multi-host form too:
    ``postgresql://user@h1:5432,h2:5432/disburse``), or a libpq ``key=value`` string."""
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
    schemes = ("postgresql", "postgres")
    hosts = urlsplit(raw).netloc.rpartition("@")[2]
    if "," not in hosts:
        return _server_url(env, "DATABASE_URL", schemes)
    # Several hosts: urlsplit reads one port only; libpq reads the list.
    _server_url({"DATABASE_URL": raw.replace(hosts, "host", 1)}, "DATABASE_URL", schemes)
    try:
        ports = conninfo_to_dict(raw).get("port") or ""
    except psycopg.ProgrammingError:
        ports = "not read"
    if not all(port.isdigit() for port in str(ports).split(",") if port):
        raise ConfigError(
            "DATABASE_URL has a malformed host list; expected postgresql://user@h1:5432,h2:5432/db"
        )
    return raw


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
        redis=_redis_url(env, "REDIS_URL", _REDIS_SCHEMES),
        redis_sentinel_master=text("REDIS_SENTINEL_MASTER", d.redis_sentinel_master),
        broker_url=_redis_url(env, "CELERY_BROKER_URL", _BROKER_SCHEMES),
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
        submit_concurrency=_count(env, "SUBMIT_CONCURRENCY", d.submit_concurrency, least=1),
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
        policy=load_policy(env["DISBURSE_POLICY"]) if env.get("DISBURSE_POLICY") else None,
        approvals_require_login=_flag(env, "APPROVALS_REQUIRE_LOGIN"),
        metrics_port=_port(env, "METRICS_PORT"),
        metrics_host=text("METRICS_HOST", d.metrics_host),
        console_port=_port(env, "CONSOLE_PORT") or d.console_port,
        console_host=text("CONSOLE_HOST", d.console_host),
        console_trusted_header=text("CONSOLE_TRUSTED_HEADER", "") or None,
        console_trusted_proxies=_addresses(env, "CONSOLE_TRUSTED_PROXIES"),
        pg_statement_timeout=_duration(env, "PG_STATEMENT_TIMEOUT", d.pg_statement_timeout),
        pg_lock_timeout=_duration(env, "PG_LOCK_TIMEOUT", d.pg_lock_timeout),
        pg_idle_in_transaction_timeout=_duration(
            env, "PG_IDLE_IN_TRANSACTION_TIMEOUT", d.pg_idle_in_transaction_timeout
        ),
        not_found_codes=_codes(env, "NOT_FOUND_CODES", d.not_found_codes),
        no_record_grace=_float(env, "NO_RECORD_GRACE", d.no_record_grace),
        query_delay=_float(env, "QUERY_DELAY", d.query_delay),
        lease_ttl=_float(env, "LEASE_TTL", d.lease_ttl),
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
