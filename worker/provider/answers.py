"""What the Vexora payout API's answers mean: its codes, the payout states they name,
and :func:`classify`, which turns an HTTP response into a :class:`PayoutResult` or the
exception that says whether the payout could exist (:mod:`worker.core.exceptions`).

The provider answers in two layers (PROVIDERS.md): the top-level ``code`` says
whether the *request* was accepted (``0000``), and ``data.status`` is the payout's
state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import requests

from worker.core.exceptions import (
    AlreadySubmitted,
    ConfigurationRejected,
    NotFound,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    Refused,
    Rejected,
)
from worker.core.redact import redact
from worker.core.settings import DEFAULT_NOT_FOUND_CODES
from worker.core.states import State
from worker.provider.http_client import (
    json_object,
    parse_retry_after,
)
from worker.provider.report import ProviderReport

# --- provider codes -------------------------------------------------------------------
# The sandbox writes its own (worker/sandbox/protocol.py); test_client_vs_sandbox checks both agree.

ACCEPTED = "0000"  # top-level code: the request was accepted (NOT the payout's state)
# data.status: the payout's state (documented in the provider pages).
STATUS_SUCCEEDED = "0000"
STATUS_PROCESSING = "0015"
STATUS_FAILED = "00029"
# Top-level error codes. 5000 and 8000 come from independent integrations; the
# others are OUR SANDBOX's choice: the provider pages document no error codes.
# Anything not listed here is treated as OutcomeUnknown (query before deciding).
CODE_SYSTEM_ERROR = "5000"  # system error, retry later: the payout may exist -> OutcomeUnknown
CODE_REQUEST_FAILED = "8000"  # request failed (invalid parameters etc.) -> Rejected (final)
CODE_BAD_SIGN = "4001"  # systemic -> ConfigurationRejected
CODE_UNKNOWN_MERCHANT = "4002"  # systemic
CODE_IP_NOT_ALLOWED = "4003"  # systemic
CODE_ORDER_NOT_FOUND = "4004"  # query of an unknown tradeNo -> NotFound (NOT_FOUND_CODES)
CODE_DUPLICATE_TRADE_NO = "4005"  # tradeNo already used -> AlreadySubmitted
SYSTEMIC_CODES = frozenset({CODE_BAD_SIGN, CODE_UNKNOWN_MERCHANT, CODE_IP_NOT_ALLOWED})
# Deliberately NOT done: guessing "systemic" from a message that mentions "sign",
# "merchant" or "ip" under an unknown code. A wrong guess would pause the whole
# cluster (or worse, fail payouts); an unknown code is OutcomeUnknown and gets queried.

PAYOUT_STATES: Mapping[str, State] = {
    STATUS_SUCCEEDED: State.SUCCEEDED,
    STATUS_PROCESSING: State.PROCESSING,
    STATUS_FAILED: State.FAILED,
}

Operation = Literal["submit", "query", "balance"]


@dataclass(frozen=True, slots=True)
class PayoutResult:
    """What the provider said about one payout (submit answer or query answer)."""

    trade_no: str
    platform_trade_no: str | None
    status: str  # raw data.status, e.g. "0015"
    message: str  # data.desc or data.message (both spellings exist), or ""
    state: State  # PROCESSING (0015), SUCCEEDED (0000) or FAILED (00029)
    amount: Decimal | None  # query answers: amount, else orderAmount, else payAmount

    @property
    def report(self) -> ProviderReport:
        return ProviderReport(self.state, self.platform_trade_no, self.status, self.message)


@dataclass(frozen=True, slots=True)
class Balance:
    available: Decimal
    frozen: Decimal
    unsettled: Decimal


# --- small shared helpers (also used by worker.provider.details) ------------------------


def to_decimal(value: Any) -> Decimal | None:
    """A money value as Decimal (``Decimal(str(x))``); None when absent or empty.

    Raises ValueError for anything that is not a finite number (booleans included).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"not an amount: {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("not an amount") from None
    if not amount.is_finite():
        raise ValueError("not a finite amount")
    return amount


def _text(value: Any) -> str | None:
    """A provider code as text: strings as-is, integers stringified, anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _flag(value: Any) -> bool | None:
    """``success`` arrives as a boolean or as the string "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


# --- classification ---------------------------------------------------------------------


def _provider_message(body: Mapping[str, Any]) -> str:
    for key in ("msg", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return redact(value)
    return ""


def _refusal(
    operation: Operation,
    code: str,
    message: str,
    status_code: int,
    what: str,
    not_found: Collection[str],
) -> ProviderError:
    """The exception for a top-level code other than ``0000``."""
    if code in SYSTEMIC_CODES:
        return ConfigurationRejected(code, message, status_code=status_code)
    if operation == "submit" and code == CODE_DUPLICATE_TRADE_NO:
        return AlreadySubmitted(
            f"{what}: tradeNo already used (code {code}: {message}); query it",
            status_code=status_code,
            code=code,
        )
    if operation == "submit" and code == CODE_REQUEST_FAILED:
        return Rejected(code, message, status_code=status_code)
    if operation == "query" and code in not_found:
        # The provider's code for an unknown tradeNo is not documented: the codes taken
        # for "no record" are a setting (NOT_FOUND_CODES; 4004, our sandbox's, by
        # default). It says nothing final: the reconciler believes it only when two
        # lookups a grace period apart agree, and then resubmits the same tradeNo. Any
        # other code is not known (below): the order is asked about again, never
        # resubmitted or retried on its word.
        return NotFound(
            f"{what}: the provider shows no such order (code {code}: {message})",
            status_code=status_code,
            code=code,
        )
    if operation == "submit" and code != CODE_SYSTEM_ERROR:
        # Refused, but the code is not documented: a first attempt is sent again later, a
        # run of them is the circuit breaker's (worker.flows.submit, worker.coordination.breaker).
        return Refused(
            f"{what}: refused (code {code}: {message})", status_code=status_code, code=code
        )
    # CODE_SYSTEM_ERROR ("retry later": the provider did not look) and, on a query or
    # a balance call, any code we do not know.
    return OutcomeUnknown(
        f"{what}: outcome unknown (code {code}: {message})", status_code=status_code, code=code
    )


def accepted_data(
    response: requests.Response,
    operation: Operation,
    what: str,
    not_found: Collection[str] = DEFAULT_NOT_FOUND_CODES,
) -> dict[str, Any]:
    """The ``data`` object of an accepted (code ``0000``) answer, or raise.

    HTTP 429 -> RateLimited; 5xx -> OutcomeUnknown; a body that is not a JSON
    object -> OutcomeUnknown (whatever the HTTP status: never assume); a top-level
    code other than 0000 -> see :func:`_refusal`; 0000 with a non-2xx status or
    ``success`` false, or without a ``data`` object -> OutcomeUnknown.
    """
    status = response.status_code
    if status == 429:
        raise RateLimited(
            f"{what}: rate limited (HTTP 429)",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise OutcomeUnknown(f"{what}: outcome unknown (HTTP {status})", status_code=status)
    body = json_object(response)
    if body is None:
        raise OutcomeUnknown(
            f"{what}: outcome unknown (HTTP {status}, body is not a JSON object)",
            status_code=status,
        )
    code = _text(body.get("code"))
    message = _provider_message(body)
    if code is None:
        raise OutcomeUnknown(
            f"{what}: outcome unknown (HTTP {status}, no code)", status_code=status
        )
    if code != ACCEPTED:
        raise _refusal(operation, code, message, status, what, not_found)
    if not 200 <= status < 300:
        raise OutcomeUnknown(
            f"{what}: outcome unknown (code {code} with HTTP {status})", status_code=status
        )
    if _flag(body.get("success")) is False:
        raise OutcomeUnknown(
            f"{what}: outcome unknown (code {code} but success=false: {message})",
            status_code=status,
            code=code,
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise OutcomeUnknown(f"{what}: outcome unknown (no data object)", status_code=status)
    return data


def payout_result(data: Mapping[str, Any], trade_no: str, what: str) -> PayoutResult:
    """A :class:`PayoutResult` from an accepted answer's ``data``, or OutcomeUnknown.

    An unrecognised ``data.status`` (PROVIDERS.md: "anything else: confirm with a
    status query before calling it final") and an answer about another tradeNo are
    OutcomeUnknown; so is an amount that is present but not a number.
    """
    status = _text(data.get("status"))
    message = ""
    for key in ("desc", "message"):
        value = data.get(key)
        if isinstance(value, str) and value:
            message = redact(value)
            break
    state = PAYOUT_STATES.get(status) if status is not None else None
    if status is None or state is None:
        raise OutcomeUnknown(
            f"{what}: outcome unknown (data.status {redact(status)!r}: {message})", code=status
        )
    answered = _text(data.get("tradeNo"))
    if answered is not None and answered != trade_no:
        raise OutcomeUnknown(f"{what}: the answer is about another tradeNo ({redact(answered)})")
    platform = _text(data.get("platFormTradeNo")) or _text(data.get("platformTradeNo"))
    amount: Decimal | None = None
    for key in ("amount", "orderAmount", "payAmount"):
        try:
            amount = to_decimal(data.get(key))
        except ValueError:
            raise OutcomeUnknown(f"{what}: outcome unknown (data.{key} is not a number)") from None
        if amount is not None:
            break
    return PayoutResult(
        trade_no=trade_no,
        platform_trade_no=platform or None,
        status=status,
        message=message,
        state=state,
        amount=amount,
    )


def classify(
    response: requests.Response,
    trade_no: str,
    operation: Operation = "submit",
    not_found: Collection[str] = DEFAULT_NOT_FOUND_CODES,
) -> PayoutResult:
    """Turn a submit or query answer into a :class:`PayoutResult`, or raise.

    =========================================  ==========================================
    HTTP 429                                   RateLimited (not sent; ``retry_after``)
    HTTP 5xx                                   OutcomeUnknown
    body not a JSON object                     OutcomeUnknown
    code 4001 / 4002 / 4003                    ConfigurationRejected (systemic)
    code 4005 (submit)                         AlreadySubmitted -> query
    code 8000 (submit)                         Rejected (final; the submitter
                                               queries instead on a repeat attempt)
    code 5000                                  OutcomeUnknown
    a NOT_FOUND_CODES code (query; 4004)       NotFound (no record shown)
    any other code (query)                     OutcomeUnknown
    any other code (submit)                    Refused (an OutcomeUnknown)
    code 0000, data.status 0015 / 0000 / 00029  PROCESSING / SUCCEEDED / FAILED
    code 0000, any other data.status           OutcomeUnknown
    =========================================  ==========================================
    """
    what = f"{operation} {trade_no}"
    return payout_result(accepted_data(response, operation, what, not_found), trade_no, what)
