"""The Vexora payout API client: submit a payout, query it by tradeNo, read the balance.

One :class:`VexoraClient` per process (it pools connections; it is thread-safe as
long as the ``requests.Session`` is, i.e. for plain requests). It never retries:
every call is one HTTP exchange with explicit (connect, read) timeouts and a total
deadline, their sum, that its body too must meet (a provider dripping it), and every
failure is raised as the exception that says whether the payout could exist
(:mod:`worker.core.exceptions`). Callers own the retry policy.

What its answers mean (codes, states, :func:`worker.provider.answers.classify`) is
:mod:`worker.provider.answers`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Collection, Mapping
from decimal import Decimal

import requests

from worker.core.accounts import Account
from worker.core.exceptions import (
    OutcomeUnknown,
)
from worker.core.settings import DEFAULT_NOT_FOUND_CODES, Settings
from worker.core.signing import SIGN_FIELD, sign
from worker.provider.answers import (
    Balance,
    PayoutResult,
    accepted_data,
    classify,
    to_decimal,
)
from worker.provider.http_client import (
    HttpClient,
    from_transport_error,
    read_by,
)

__all__ = ["VexoraClient", "is_trade_no"]

log = logging.getLogger(__name__)

SUBMIT_PATH = "/v1/vexora/disbursements"
QUERY_PATH = "/v1/vexora/queryPayOutResult"
BALANCE_PATH = "/v1/vexora/queryBalance"

# DESIGN.md: at most 32 characters, alphanumeric (ours are 32 hex characters).
_TRADE_NO = re.compile(r"[A-Za-z0-9]{1,32}")
_RESERVED = frozenset({SIGN_FIELD, "timestamp"})


class VexoraClient(HttpClient):
    """Payout API client; the session and timeouts are :class:`HttpClient`'s."""

    def __init__(
        self,
        base_url: str,
        merchant_no: str,
        app_secret: str,
        *,
        timeouts: tuple[float, float],
        session: requests.Session | None = None,
        pool_size: int = 10,
        not_found_codes: Collection[str] = DEFAULT_NOT_FOUND_CODES,
    ) -> None:
        super().__init__(base_url, timeouts=timeouts, session=session, pool_size=pool_size)
        self.merchant_no = merchant_no
        self._app_secret = app_secret
        # The top-level codes of a query answer that mean "no such order".
        self.not_found_codes = frozenset(not_found_codes)

    @classmethod
    def from_settings(cls, settings: Settings, market: str) -> VexoraClient:
        """The client of ``market``'s provider account."""
        return cls.for_account(
            settings.account(market),
            timeouts=settings.timeouts,
            not_found_codes=settings.not_found_codes,
        )

    @classmethod
    def for_account(
        cls,
        account: Account,
        *,
        timeouts: tuple[float, float],
        not_found_codes: Collection[str] = DEFAULT_NOT_FOUND_CODES,
        pool_size: int = 10,
    ) -> VexoraClient:
        """``pool_size``: connections kept to the provider, at least the calls made at
        once (SUBMIT_CONCURRENCY), so that no sender waits for one."""
        return cls(
            account.base_url,
            account.merchant_no,
            account.app_secret,
            timeouts=timeouts,
            not_found_codes=not_found_codes,
            pool_size=pool_size,
        )

    def __repr__(self) -> str:
        return f"VexoraClient(base_url={self.base_url!r}, merchant_no={self.merchant_no!r})"

    # -- requests -------------------------------------------------------------------

    def signed_body(
        self, fields: Mapping[str, str], trade_no: str, timestamp_ms: int | None = None
    ) -> dict[str, str]:
        """``fields`` + ``tradeNo`` + ``timestamp`` (Unix ms) + ``sign`` over exactly those.

        Every value must already be a string (amounts formatted by the market's
        rules): what is signed is byte for byte what is sent. Empty values are left
        out of the body, as the signing rule leaves them out of the signature.
        """
        _check_trade_no(trade_no)
        body: dict[str, str] = {}
        for key, value in fields.items():
            if not isinstance(value, str):
                raise TypeError(f"field {key!r} must be a str, got {type(value).__name__}")
            if key in _RESERVED:
                raise ValueError(f"field {key!r} is set by the client")
            if key == "tradeNo" and value != trade_no:
                raise ValueError("fields['tradeNo'] differs from trade_no")
            if value != "":
                body[key] = value
        body["tradeNo"] = trade_no
        return self._sign(body, timestamp_ms)

    def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult:
        """POST the payout once. Raises NotSent / OutcomeUnknown / Rejected / ... (see classify)."""
        body = self.signed_body(fields, trade_no)
        response = self._post(SUBMIT_PATH, body, f"submit {trade_no}")
        return classify(response, trade_no, "submit")

    def query(self, trade_no: str) -> PayoutResult:
        """The payout's state by our tradeNo; NotFound when the provider has no such order."""
        _check_trade_no(trade_no)
        body = self._sign({"tradeNo": trade_no}, None)
        response = self._post(QUERY_PATH, body, f"query {trade_no}")
        return classify(response, trade_no, "query", self.not_found_codes)

    def balance(self) -> Balance:
        """The merchant balance. ``freezeAmount``/``unsettledAmount`` default to 0 when absent."""
        what = "balance"
        response = self._post(BALANCE_PATH, self._sign({}, None), what)
        data = accepted_data(response, "balance", what)
        try:
            available = to_decimal(data.get("availableAmount"))
            frozen = to_decimal(data.get("freezeAmount"))
            unsettled = to_decimal(data.get("unsettledAmount"))
        except ValueError:
            raise OutcomeUnknown(f"{what}: an amount is not a number") from None
        if available is None:
            raise OutcomeUnknown(f"{what}: no availableAmount in the answer")
        return Balance(
            available=available,
            frozen=frozen if frozen is not None else Decimal(0),
            unsettled=unsettled if unsettled is not None else Decimal(0),
        )

    # -- plumbing -------------------------------------------------------------------

    def _sign(self, body: dict[str, str], timestamp_ms: int | None) -> dict[str, str]:
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        body["timestamp"] = str(int(timestamp_ms))
        body[SIGN_FIELD] = sign(body, self._app_secret)
        return body

    def _post(self, path: str, body: Mapping[str, str], what: str) -> requests.Response:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "merchantNo": self.merchant_no,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        # The tradeNo in its own log field: in the text, its digit runs are masked.
        ids = {"trade_no": body.get("tradeNo")}
        started = time.monotonic()
        try:
            # Streamed: the body is read within what is left of the call's total time.
            response = self._session.post(
                self.base_url + path,
                data=payload,
                headers=headers,
                timeout=self.timeouts,
                allow_redirects=False,
                stream=True,
            )
            read_by(response, started + self.total_timeout)
        except requests.RequestException as exc:
            error = from_transport_error(exc, what)
            log.warning(
                "vexora %s failed after %.3fs: %s",
                path,
                time.monotonic() - started,
                error,
                extra=ids,
            )
            raise error from exc
        log.debug(
            "vexora %s: HTTP %s in %.3fs",
            what,
            response.status_code,
            time.monotonic() - started,
            extra=ids,
        )
        return response


def is_trade_no(value: object) -> bool:
    """True for a string that can be one of our tradeNos."""
    return isinstance(value, str) and _TRADE_NO.fullmatch(value) is not None


def _check_trade_no(trade_no: str) -> None:
    if not is_trade_no(trade_no):
        raise ValueError("tradeNo must be 1-32 characters of A-Z, a-z or 0-9")
