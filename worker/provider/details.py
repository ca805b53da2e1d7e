"""The disbursement-details client (seed 003): one disbursement, the paged list.

Used by reconciliation to learn what became of payouts the provider accepted. All
calls are reads, so nothing here can move money; the exceptions still say where a
failure happened (:mod:`worker.core.exceptions`) so callers can tell "try later" from
"fix the configuration".

:class:`DetailsApi` is what every request to this API shares (the partner key header,
transport failures mapped, :func:`check_answer` for the answer): the reads here and
the token fetch in :mod:`worker.provider.token`. Bearer tokens come from the
:class:`TokenProvider` the client is built with: in production the Redis-shared
cache (:class:`worker.provider.token.TokenCache`). On a 401 the failed token is invalidated
and the call retried once with a fresh one; a fresh token refused too puts the token
provider into its cluster-wide back-off. A caller under a rate limit passes
``throttle``: it runs before every request, including that retry and every further
page, so none of them escapes the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

import requests

from worker.core.config import Settings
from worker.core.exceptions import (
    AuthenticationFailed,
    NotFound,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
)
from worker.core.redact import redact
from worker.core.states import State
from worker.provider.http_client import (
    HttpClient,
    from_transport_error,
    json_object,
    parse_retry_after,
)
from worker.provider.vexora import to_decimal

__all__ = [
    "DEFAULT_PER_PAGE",
    "MAX_PAGES",
    "DetailsApi",
    "DetailsClient",
    "Disbursement",
    "ListPage",
    "TokenProvider",
    "check_answer",
]

log = logging.getLogger(__name__)

DEFAULT_PER_PAGE = 25  # PROVIDERS.md: 25 rows a page
MAX_PAGES = 10_000  # a hard stop, so a provider that never says "last page" cannot loop us
# Runs before each request: a rate limiter's acquire (it may raise to give up).
Throttle = Callable[[], object]


def _unthrottled() -> None:
    return None


STATES: Mapping[str, State] = {
    "success": State.SUCCEEDED,
    "failed": State.FAILED,
    "pending": State.PROCESSING,
}


class TokenProvider(Protocol):
    def get(self) -> str:
        """The current bearer token (from a shared cache, or freshly fetched)."""
        ...

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (it just got a 401), unless it was already replaced."""
        ...

    def back_off(self, token: str) -> None:
        """A fresh ``token`` got a 401 too: forget it and stop fetching for a while."""
        ...


@dataclass(frozen=True, slots=True)
class Disbursement:
    transaction_id: str
    status: str  # raw: "success" | "failed" | "pending" | other
    state: State | None  # SUCCEEDED / FAILED / PROCESSING (pending); None if unrecognised
    amount: Decimal | None
    currency: str | None
    total_amount: Decimal | None
    fees: tuple[Decimal, ...]
    posted_at_ms: int | None
    processed_at_ms: int | None
    notes: str | None
    # The currency of total_amount, and the one currency of every fee (None when the
    # fees name several); one left out is the amount's.
    total_currency: str | None = None
    fee_currency: str | None = None


# --- parsing ---------------------------------------------------------------------------


def _money(value: Any, field: str) -> tuple[Decimal | None, str | None]:
    """An ``{value, currency}`` object (or a bare number) as (Decimal, currency)."""
    currency = None
    if isinstance(value, Mapping):
        raw_currency = value.get("currency")
        currency = raw_currency if isinstance(raw_currency, str) and raw_currency else None
        value = value.get("value")
    try:
        return to_decimal(value), currency
    except ValueError:
        raise OutcomeUnknown(f"details: {field} is not a number") from None


def _millis(value: Any) -> int | None:
    """A Unix-ms timestamp (string or number); None when absent or unparseable."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            return int(Decimal(str(value).strip()))
        except (ArithmeticError, ValueError):
            return None


def parse_disbursement(row: Mapping[str, Any]) -> Disbursement:
    """One disbursement object; OutcomeUnknown if it has no id or a malformed amount."""
    raw_id = row.get("transaction_id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise OutcomeUnknown("details: a disbursement without transaction_id")
    raw_status = row.get("status")
    status = (
        raw_status if isinstance(raw_status, str) else "" if raw_status is None else str(raw_status)
    )
    amount, currency = _money(row.get("amount"), "amount")
    total, total_currency = _money(row.get("total_amount"), "total_amount")
    fees_raw = row.get("fees")
    fees: list[Decimal] = []
    fee_currencies: set[str | None] = set()
    if isinstance(fees_raw, list):
        for fee in fees_raw:
            value, fee_currency = _money(fee, "fees")
            if value is not None:
                fees.append(value)
                fee_currencies.add(fee_currency or currency)
    notes = row.get("notes")
    return Disbursement(
        transaction_id=str(raw_id),
        status=status,
        state=STATES.get(status.strip().lower()),
        amount=amount,
        currency=currency or total_currency,
        total_amount=total,
        fees=tuple(fees),
        posted_at_ms=_millis(row.get("post_timestamp")),
        processed_at_ms=_millis(row.get("processed_timestamp")),
        notes=notes if isinstance(notes, str) else None,
        total_currency=total_currency or currency,
        fee_currency=fee_currencies.pop() if len(fee_currencies) == 1 else None,
    )


def _unwrap(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The disbursement object of a details answer, flat or nested (seed 003's example)."""
    data = body.get("data")
    for _ in range(3):  # flat: data is the row; nested: data.data is the row
        if not isinstance(data, dict):
            return None
        if "transaction_id" in data:
            return data
        data = data.get("data")
    return None


_CURRENT = ("current_page", "currentPage", "page")
_LAST = ("last_page", "lastPage", "total_pages", "totalPages")
_PER_PAGE = ("per_page", "perPage", "page_size", "pageSize", "limit")


def _int(meta: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first of ``keys`` holding a whole number (2, "2", 2.0); None if none does."""
    for key in keys:
        value = meta.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            continue
        try:
            number = Decimal(str(value).strip())
        except ArithmeticError:
            continue
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
    return None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of the disbursement list, newest first.

    ``rows`` are the disbursements that parsed; ``skipped`` says, for every row that
    did not (no id, a non-numeric amount, not an object), why: such a row is left out
    rather than failing the page. ``more`` is whether a further page may hold rows:
    the current page is below the last one the answer names, or, when it names none,
    the page came back full (``per_page``, else 25 rows).
    """

    number: int
    rows: tuple[Disbursement, ...]
    skipped: tuple[str, ...]
    more: bool


def _page(body: Mapping[str, Any], number: int, what: str) -> ListPage:
    """Rows and paging metadata of a list answer, in any of the spellings seen.

    Rows: ``data`` as a list, or ``data.items`` / ``data.data``. Metadata:
    ``pagination`` or ``meta``, top level or inside ``data``, snake_case or
    camelCase, or ``{}``/absent.
    """
    data = body.get("data")
    containers: list[Mapping[str, Any]] = [body]
    raw_rows: Any = data
    if isinstance(data, dict):
        containers.append(data)
        raw_rows = next((data[k] for k in ("items", "data") if isinstance(data.get(k), list)), None)
    if not isinstance(raw_rows, list):
        raise OutcomeUnknown(f"{what}: no list of disbursements in the answer")
    meta: dict[str, Any] = {}
    for container in containers:
        for key in ("pagination", "meta"):
            found = container.get(key)
            if isinstance(found, dict):
                meta = {**found, **meta}
    current, last = _int(meta, _CURRENT), _int(meta, _LAST)
    if current is not None and current != number:
        raise ProviderError(f"{what}: the provider answered page {current}")
    rows: list[Disbursement] = []
    skipped: list[str] = []
    for index, row in enumerate(raw_rows, start=1):
        try:
            if not isinstance(row, Mapping):
                raise OutcomeUnknown("details: a row that is not an object")
            rows.append(parse_disbursement(row))
        except OutcomeUnknown as exc:
            skipped.append(f"{what}, row {index}: {str(exc).removeprefix('details: ')}")
    if not raw_rows:
        more = False
    elif last is not None:
        more = number < last
    else:
        more = len(raw_rows) >= (_int(meta, _PER_PAGE) or DEFAULT_PER_PAGE)
    return ListPage(number, tuple(rows), tuple(skipped), more)


def _error_message(body: Mapping[str, Any] | None) -> str:
    if body is None:
        return ""
    error = body.get("error")
    message: Any = None
    if isinstance(error, Mapping):
        message = error.get("message")
    if message is None:
        message = body.get("message")
    return redact(message) if isinstance(message, str) else ""


def _validation_errors(body: Mapping[str, Any] | None) -> str:
    error = body.get("error") if body is not None else None
    errors = error.get("errors") if isinstance(error, Mapping) else None
    if isinstance(errors, Mapping):
        parts = []
        for field, problems in errors.items():
            listed = problems if isinstance(problems, list) else [problems]
            parts.append(f"{field}: {'; '.join(redact(p, 120) for p in listed)}")
        return ", ".join(parts)
    if isinstance(errors, list):
        return ", ".join(redact(p, 120) for p in errors)
    return ""


# --- the API's plumbing -----------------------------------------------------------------


class DetailsApi(HttpClient):
    """One request to the details API: the partner key (``X-PARTNER-ID``) on every call,
    redirects refused, transport failures raised as NotSent / OutcomeUnknown.

    The base of :class:`DetailsClient` and of :class:`worker.provider.token.TokenFetcher`; the
    session and timeouts are :class:`HttpClient`'s.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeouts: tuple[float, float],
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, timeouts=timeouts, session=session)
        self._api_key = api_key

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> requests.Response:
        all_headers = {"X-PARTNER-ID": self._api_key, "Accept": "application/json", **headers}
        try:
            return self._session.request(
                method,
                self.base_url + path,
                params=params,
                json=json,
                headers=all_headers,
                timeout=self.timeouts,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            error = from_transport_error(exc, what)
            log.warning("details %s: %s", what, error)
            raise error from exc


def _status(response: requests.Response, body: Mapping[str, Any] | None) -> int:
    """The HTTP status, or the error status some APIs put in the body of an HTTP 200."""
    status = response.status_code
    in_body = body.get("status") if body is not None else None
    if (
        200 <= status < 300
        and isinstance(in_body, int)
        and not isinstance(in_body, bool)
        and in_body >= 400
    ):
        return in_body
    return status


def check_answer(
    response: requests.Response, body: dict[str, Any] | None, what: str
) -> dict[str, Any]:
    """``body`` (the answer as a JSON object, or None) of a successful answer, or raise.

    429 -> RateLimited; 401 -> AuthenticationFailed; 403 -> ProviderError (IP not
    registered?); 404 -> NotFound; 422 -> ProviderError listing ``error.errors``;
    5xx or an unparseable 2xx body -> OutcomeUnknown; any other status -> ProviderError.
    """
    status = _status(response, body)
    message = _error_message(body)
    suffix = f": {message}" if message else ""
    if status == 429:
        raise RateLimited(
            f"{what}: rate limited (HTTP 429)",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status == 401:
        raise AuthenticationFailed(f"{what}: unauthorized (HTTP 401){suffix}", status_code=status)
    if status == 403:
        raise ProviderError(
            f"{what}: forbidden (HTTP 403): is this server's IP registered with the "
            f"provider?{suffix}",
            status_code=status,
        )
    if status == 404:
        raise NotFound(f"{what}: not found (HTTP 404){suffix}", status_code=status)
    if status == 422:
        errors = _validation_errors(body)
        raise ProviderError(
            f"{what}: invalid request (HTTP 422){suffix}" + (f" [{errors}]" if errors else ""),
            status_code=status,
        )
    if status >= 500:
        raise OutcomeUnknown(f"{what}: provider error (HTTP {status}){suffix}", status_code=status)
    if not 200 <= status < 300:
        raise ProviderError(f"{what}: HTTP {status}{suffix}", status_code=status)
    if body is None:
        raise OutcomeUnknown(f"{what}: body is not a JSON object", status_code=status)
    if body.get("success") in (False, "false"):
        raise ProviderError(f"{what}: success=false{suffix}", status_code=status)
    return body


# --- the client ------------------------------------------------------------------------


class DetailsClient(DetailsApi):
    """Disbursement-details API client: reads with a bearer token from ``tokens``."""

    max_pages = MAX_PAGES

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        account_id: str,
        tokens: TokenProvider,
        details_path: str,
        list_path: str,
        timeouts: tuple[float, float],
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeouts=timeouts, session=session)
        self.account_id = account_id
        self.tokens = tokens
        self.details_path = details_path
        self.list_path = list_path

    @classmethod
    def from_settings(cls, settings: Settings, tokens: TokenProvider) -> DetailsClient:
        return cls(
            settings.details_base_url,
            api_key=settings.details_api_key,
            account_id=settings.details_account_id,
            tokens=tokens,
            details_path=settings.details_path,
            list_path=settings.details_list_path,
            timeouts=settings.timeouts,
        )

    def __repr__(self) -> str:
        return f"DetailsClient(base_url={self.base_url!r}, account_id={self.account_id!r})"

    # -- reads ----------------------------------------------------------------------

    def details(
        self, transaction_id: str, page: int | None = None, *, throttle: Throttle = _unthrottled
    ) -> Disbursement:
        """One disbursement by the provider's id (our ``platFormTradeNo``); NotFound on 404."""
        path = self.details_path.format(
            account_id=quote(self.account_id, safe=""),
            transaction_id=quote(str(transaction_id), safe=""),
        )
        what = f"details {str(transaction_id)[:64]}"
        params = {"page": str(page)} if page is not None else None
        body = self._authorized_get(path, what, params, throttle)
        row = _unwrap(body)
        if row is None:
            raise OutcomeUnknown(f"{what}: no disbursement in the answer")
        found = parse_disbursement(row)
        if found.transaction_id != str(transaction_id):
            raise OutcomeUnknown(f"{what}: the answer is about another transaction")
        return found

    def page(self, number: int, *, throttle: Throttle = _unthrottled) -> ListPage:
        """Page ``number`` (from 1) of the disbursement list, newest first.

        A malformed row is left out and named in :attr:`ListPage.skipped` (and logged);
        ProviderError when the provider answers another page than the one asked for.
        """
        path = self.list_path.format(account_id=quote(self.account_id, safe=""))
        what = f"list page {number}"
        body = self._authorized_get(path, what, {"page": str(number)}, throttle)
        found = _page(body, number, what)
        for why in found.skipped:
            log.warning("details %s: row skipped", why)
        return found

    def list(
        self, start_page: int = 1, *, throttle: Throttle = _unthrottled
    ) -> Iterator[Disbursement]:
        """Every disbursement from ``start_page`` on, following the pagination
        (:attr:`ListPage.more`); malformed rows are skipped. Raises ProviderError when
        the provider serves the same page twice or after :attr:`max_pages` pages.
        """
        number = start_page
        previous_ids: list[str] | None = None
        for _ in range(self.max_pages):
            found = self.page(number, throttle=throttle)
            ids = [row.transaction_id for row in found.rows]
            if ids and ids == previous_ids:
                raise ProviderError(
                    f"list page {number}: same rows as the page before; paging ignored?"
                )
            previous_ids = ids
            yield from found.rows
            if not found.more:
                return
            number += 1
        raise ProviderError(f"list: stopped after {self.max_pages} pages")

    # -- plumbing -------------------------------------------------------------------

    def _authorized_get(
        self, path: str, what: str, params: Mapping[str, str] | None, throttle: Throttle
    ) -> dict[str, Any]:
        """GET with the bearer token; on a 401 invalidate it and retry once with a fresh one.

        A second 401 raises AuthenticationFailed and backs the token provider off.
        """
        for attempt in (1, 2):
            token = self.tokens.get()
            throttle()
            response = self._send(
                "GET", path, what, params=params, headers={"Authorization": f"Bearer {token}"}
            )
            body = json_object(response)
            if _status(response, body) == 401:
                if attempt == 1:
                    log.info("details %s: 401, refreshing the token once", what)
                    self.tokens.invalidate(token)
                    continue
                # A fresh token refused too: our credentials are no good right now. Left
                # alone, every caller would fetch a token per call while the provider
                # refuses them all; the token provider backs off cluster-wide instead.
                self.tokens.back_off(token)
            return check_answer(response, body, what)
        raise AssertionError("unreachable")  # pragma: no cover
