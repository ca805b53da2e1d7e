"""Every setting, read from the environment (and an optional ``.env``) into one typed object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from dotenv import load_dotenv

from worker.exceptions import ConfigError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


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
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""
    key_prefix: str = "disburse"

    vexora_base_url: str = "http://127.0.0.1:8700"
    vexora_merchant_no: str = "M-SANDBOX"
    vexora_app_secret: str = field(default="sandbox-secret", repr=False)
    vexora_rate_limit: Rate = Rate(20)

    details_base_url: str = "http://127.0.0.1:8700"
    details_path: str = "/api/v1.0/disbursements/{account_id}/{transaction_id}"
    details_list_path: str = "/api/v1.0/disbursement/{account_id}"
    details_api_key: str = field(default="sandbox-partner", repr=False)
    details_client_id: str = "sandbox-client"
    details_client_secret: str = field(default="sandbox-client-secret", repr=False)
    details_account_id: str = "sandbox-account"
    details_rate_limit: Rate = Rate(20)

    notify_url: str = "https://127.0.0.1:8701/notify"
    allow_unsigned_webhooks: bool = False

    connect_timeout: float = 3.05
    read_timeout: float = 15.0

    # A submit task hands the rest of its chunk on after this long, which bounds every
    # task's run time and so the claim lease and Celery's time limits derived from it.
    submit_budget: float = 30.0
    reconcile_every: float = 30.0
    reconcile_after: float = 60.0
    review_after: float = 86400.0
    sweep_after: float = 300.0

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def task_time_limit(self) -> float:
        """Hard limit for any task: its budget, one more HTTP call, and margin."""
        return self.submit_budget + self.connect_timeout + self.read_timeout + 30.0

    @property
    def claim_lease(self) -> float:
        """After this long a SUBMITTING order's worker is certainly gone (killed at the limit)."""
        return self.task_time_limit + 10.0

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


def _rate(env: Mapping[str, str], name: str, default: Rate) -> Rate:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return Rate.parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    d = Settings()

    def text(name: str, default: str) -> str:
        return env.get(name) or default

    return Settings(
        redis_url=text("REDIS_URL", d.redis_url),
        broker_url=text("CELERY_BROKER_URL", ""),
        key_prefix=text("DISBURSE_KEY_PREFIX", d.key_prefix),
        vexora_base_url=text("VEXORA_BASE_URL", d.vexora_base_url).rstrip("/"),
        vexora_merchant_no=text("VEXORA_MERCHANT_NO", d.vexora_merchant_no),
        vexora_app_secret=text("VEXORA_APP_SECRET", d.vexora_app_secret),
        vexora_rate_limit=_rate(env, "VEXORA_RATE_LIMIT", d.vexora_rate_limit),
        details_base_url=text("DETAILS_BASE_URL", d.details_base_url).rstrip("/"),
        details_path=text("DETAILS_PATH", d.details_path),
        details_list_path=text("DETAILS_LIST_PATH", d.details_list_path),
        details_api_key=text("DETAILS_API_KEY", d.details_api_key),
        details_client_id=text("DETAILS_CLIENT_ID", d.details_client_id),
        details_client_secret=text("DETAILS_CLIENT_SECRET", d.details_client_secret),
        details_account_id=text("DETAILS_ACCOUNT_ID", d.details_account_id),
        details_rate_limit=_rate(env, "DETAILS_RATE_LIMIT", d.details_rate_limit),
        notify_url=text("NOTIFY_URL", d.notify_url),
        allow_unsigned_webhooks=text("ALLOW_UNSIGNED_WEBHOOKS", "").lower() in ("1", "true", "yes"),
        connect_timeout=_float(env, "HTTP_CONNECT_TIMEOUT", d.connect_timeout),
        read_timeout=_float(env, "HTTP_READ_TIMEOUT", d.read_timeout),
        submit_budget=_float(env, "SUBMIT_BUDGET", d.submit_budget),
        reconcile_every=_float(env, "RECONCILE_EVERY", d.reconcile_every),
        reconcile_after=_float(env, "RECONCILE_AFTER", d.reconcile_after),
        review_after=_float(env, "REVIEW_AFTER", d.review_after),
        sweep_after=_float(env, "SWEEP_AFTER", d.sweep_after),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; a ``.env`` in the working directory fills gaps."""
    load_dotenv(override=False)
    return load_settings()
