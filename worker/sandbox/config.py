"""Every knob of the sandbox provider, changeable at runtime (``POST /_sandbox/config``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.sandbox.protocol import ACCEPTED, CODE_DUPLICATE_TRADE_NO, CODE_ORDER_NOT_FOUND

PAGINATION_STYLES = ("pagination", "meta", "empty", "none")
SECRET_KNOBS = frozenset({"app_secret", "api_key", "client_secret"})
RATIO_KNOBS = (
    "failure_ratio",
    "error_ratio",
    "error_after_record_share",
    "hang_ratio",
    "drop_webhook_ratio",
    "duplicate_webhook_ratio",
)


class SandboxConfigError(ValueError):
    """A knob that does not exist or a value it cannot take."""


# The sandbox's own credentials: public, in this repository, so accepted only by the
# sandbox. No setting of the workers defaults to them (worker.core.config); the demo, `disburse
# up`, the local cluster and the tests hand them in (worker.dev.credentials).
MERCHANT_NO = "M-SANDBOX"
APP_SECRET = "sandbox-secret"  # noqa: S105 - the sandbox's own, public
API_KEY = "sandbox-partner"
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105
ACCOUNT_ID = "sandbox-account"


@dataclass
class SandboxConfig:
    """What the simulated provider accepts and how it misbehaves.

    Its credentials are its own (above); :func:`worker.dev.credentials.sandbox_env`
    gives the settings that make workers use them.
    """

    merchant_no: str = MERCHANT_NO
    app_secret: str = field(default=APP_SECRET, repr=False)
    # More merchant accounts: merchantNo -> {"app_secret": ..., "rate_ceiling": ...}. Each
    # account (this one included) is checked against its own secret and has its own
    # rate ceiling window (the top-level rate_ceiling unless it sets one).
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    api_key: str = field(default=API_KEY, repr=False)
    client_id: str = CLIENT_ID
    client_secret: str = field(default=CLIENT_SECRET, repr=False)
    account_id: str = ACCOUNT_ID

    token_lifetime: float = 3600.0  # seconds; sent as a string in expires_in
    settle_delay: tuple[float, float] = (0.2, 1.0)  # uniform(a, b) seconds after acceptance
    failure_ratio: float = 0.1  # share of payouts settling to 00029 instead of 0000
    latency: float = 0.0  # seconds added before answering any API call
    # Plus, per request, a lognormal wait like a real provider's: median * exp(sigma * N(0,1)),
    # capped at 10 medians (chance.LATENCY_CAP_MEDIANS); 0: none.
    latency_median: float = 0.0
    latency_sigma: float = 0.6
    error_ratio: float = 0.0  # payout POSTs answered HTTP 500
    error_after_record_share: float = 0.5  # of those 500s, the share sent after recording
    hang_ratio: float = 0.0  # payout recorded, answer never sent (connection closed later)
    hang_seconds: float = 30.0
    # The provider documents neither code: a query for a tradeNo it never recorded, and a
    # POST repeating a recorded tradeNo, can be answered with any top-level code.
    not_found_code: str = CODE_ORDER_NOT_FOUND
    repeat_code: str = CODE_DUPLICATE_TRADE_NO
    query_lag: float = 0.0  # seconds after recording before queryPayOutResult shows a payout
    drop_webhook_ratio: float = 0.0  # payouts whose webhook is never sent
    duplicate_webhook_ratio: float = 0.0  # payouts whose webhook is delivered twice
    webhooks: bool = True  # False: no webhooks at all
    webhook_retry_schedule: tuple[float, ...] = (2, 5, 10, 30, 3600, 10800, 10800, 10800)
    webhook_time_scale: float = 1.0  # multiplies the retry schedule (tests use 0.01)
    webhook_timeout: float = 10.0  # the receiver must answer "OK" within this many seconds
    webhook_target: str | None = None  # deliver every webhook here instead of notifyUrl
    allow_remote_webhooks: bool = False  # by default only loopback receivers are called
    rate_ceiling: float | None = None  # payout POSTs/s (sliding 1 s) above which -> HTTP 429
    page_size: int = 25
    pagination_style: str = "pagination"  # "pagination" | "meta" | "empty" | "none"
    # Payouts made elsewhere on the account (another system's) arriving at the top of the
    # list just before each list page is answered: rows shift down under a walk.
    list_arrivals: int = 0
    # The list request with this number (counted from the start or a reset) finds every
    # token issued so far revoked: a 401 in the middle of a walk, once.
    revoke_tokens_at_list_request: int | None = None
    nested_details: bool = True  # details answer nests data inside data, as seed 003 does
    balance: str = "1000000000000"  # starting available balance (queryBalance)
    fee: str = "2000.00"  # per-payout fee shown by the details API
    seed: int | None = None  # makes every random decision reproducible

    def __post_init__(self) -> None:
        # Coerce and validate what the constructor was given (lists -> tuples, etc.).
        self.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def update(self, knobs: Mapping[str, Any]) -> None:
        """Set knobs (coercing JSON/CLI values); all or nothing: nothing changes on error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise SandboxConfigError(f"unknown knob(s): {', '.join(unknown)}")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, raw in knobs.items():
            try:
                values[name] = _COERCE[name](raw)
            except (TypeError, ValueError) as exc:
                raise SandboxConfigError(f"{name}={raw!r}: {exc}") from None
        _validate(values)
        for name, value in values.items():
            setattr(self, name, value)

    def as_dict(self, reveal_secrets: bool = False) -> dict[str, Any]:
        """JSON-ready knobs; secrets masked unless asked for."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if f.name in SECRET_KNOBS and not reveal_secrets:
                value = "***"
            if f.name == "accounts":
                value = {
                    merchant: {**account, **({} if reveal_secrets else {"app_secret": "***"})}
                    for merchant, account in value.items()
                }
            out[f.name] = value
        return out

    def secret_of(self, merchant_no: str) -> str | None:
        """The app secret of a merchant account this provider has; None for any other."""
        if merchant_no == self.merchant_no:
            return self.app_secret
        account = self.accounts.get(merchant_no)
        return None if account is None else str(account["app_secret"])

    def rate_ceiling_of(self, merchant_no: str) -> float | None:
        """Payout POSTs/s of one merchant account above which it is answered HTTP 429."""
        account = self.accounts.get(merchant_no, {})
        ceiling: float | None = account.get("rate_ceiling", self.rate_ceiling)
        return ceiling


def _text(raw: Any) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise TypeError("expected a string")
    return str(raw)


def _optional_text(raw: Any) -> str | None:
    return None if raw is None or raw == "" else _text(raw)


def _number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise TypeError("expected a number")
    return float(raw)


def _optional_number(raw: Any) -> float | None:
    return None if raw is None or raw == "" else _number(raw)


def _integer(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise TypeError("expected an integer")
    return int(raw)


def _optional_integer(raw: Any) -> int | None:
    return None if raw is None or raw == "" else _integer(raw)


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return raw.lower() in ("1", "true", "yes", "on")
    raise TypeError("expected true or false")


def _numbers(raw: Any) -> tuple[float, ...]:
    if isinstance(raw, str):
        raw = [part for part in raw.replace(",", " ").split() if part]
    if not isinstance(raw, list | tuple):
        raise TypeError("expected a list of numbers")
    return tuple(_number(item) for item in raw)


def _accounts_knob(raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise TypeError("expected an object of merchantNo -> {app_secret, rate_ceiling}")
    accounts: dict[str, dict[str, Any]] = {}
    for merchant, account in raw.items():
        if not isinstance(account, dict) or "app_secret" not in account:
            raise ValueError(f"account {merchant!r} needs an app_secret")
        unknown = sorted(set(account) - {"app_secret", "rate_ceiling"})
        if unknown:
            raise ValueError(f"account {merchant!r}: unknown field(s) {', '.join(unknown)}")
        coerced: dict[str, Any] = {"app_secret": _text(account["app_secret"])}
        if "rate_ceiling" in account:
            coerced["rate_ceiling"] = _optional_number(account["rate_ceiling"])
        accounts[_text(merchant)] = coerced
    return accounts


def _pair(raw: Any) -> tuple[float, float]:
    values = _numbers(raw)
    if len(values) != 2:
        raise ValueError("expected two numbers [min, max]")
    return (values[0], values[1])


_COERCE: dict[str, Any] = {
    "merchant_no": _text,
    "app_secret": _text,
    "accounts": _accounts_knob,
    "api_key": _text,
    "client_id": _text,
    "client_secret": _text,
    "account_id": _text,
    "token_lifetime": _number,
    "settle_delay": _pair,
    "failure_ratio": _number,
    "latency": _number,
    "latency_median": _number,
    "latency_sigma": _number,
    "error_ratio": _number,
    "hang_ratio": _number,
    "hang_seconds": _number,
    "error_after_record_share": _number,
    "not_found_code": _text,
    "repeat_code": _text,
    "query_lag": _number,
    "drop_webhook_ratio": _number,
    "duplicate_webhook_ratio": _number,
    "webhooks": _flag,
    "webhook_retry_schedule": _numbers,
    "webhook_time_scale": _number,
    "webhook_timeout": _number,
    "webhook_target": _optional_text,
    "allow_remote_webhooks": _flag,
    "rate_ceiling": _optional_number,
    "page_size": _integer,
    "pagination_style": _text,
    "list_arrivals": _integer,
    "revoke_tokens_at_list_request": _optional_integer,
    "nested_details": _flag,
    "balance": _text,
    "fee": _text,
    "seed": _optional_integer,
}


def _validate(values: Mapping[str, Any]) -> None:
    for name in RATIO_KNOBS:
        if not 0.0 <= values[name] <= 1.0:
            raise SandboxConfigError(f"{name} must be between 0 and 1")
    if values["error_ratio"] + values["hang_ratio"] > 1.0:
        raise SandboxConfigError("error_ratio + hang_ratio must not exceed 1")
    low, high = values["settle_delay"]
    if low < 0 or high < low:
        raise SandboxConfigError("settle_delay must be [min, max] with 0 <= min <= max")
    for name in ("not_found_code", "repeat_code"):
        if not values[name].strip() or values[name] == ACCEPTED:
            raise SandboxConfigError(f"{name} must be a top-level error code, not {ACCEPTED}")
    for name in (
        "latency",
        "latency_median",
        "latency_sigma",
        "hang_seconds",
        "webhook_time_scale",
        "query_lag",
    ):
        if values[name] < 0:
            raise SandboxConfigError(f"{name} must not be negative")
    for name in ("token_lifetime", "webhook_timeout"):
        if values[name] <= 0:
            raise SandboxConfigError(f"{name} must be positive")
    if any(delay < 0 for delay in values["webhook_retry_schedule"]):
        raise SandboxConfigError("webhook_retry_schedule must not hold negative delays")
    ceilings = [
        values["rate_ceiling"],
        *(a.get("rate_ceiling") for a in values["accounts"].values()),
    ]
    if any(ceiling is not None and ceiling <= 0 for ceiling in ceilings):
        raise SandboxConfigError("rate_ceiling must be positive (or null for none)")
    if values["list_arrivals"] < 0:
        raise SandboxConfigError("list_arrivals must not be negative")
    if values["page_size"] < 1:
        raise SandboxConfigError("page_size must be at least 1")
    if values["pagination_style"] not in PAGINATION_STYLES:
        raise SandboxConfigError(f"pagination_style must be one of {', '.join(PAGINATION_STYLES)}")
    for name in ("balance", "fee"):
        try:
            float(values[name])
        except ValueError:
            raise SandboxConfigError(f"{name} must be a number string") from None
