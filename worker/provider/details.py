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
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import requests

from worker.core.exceptions import (
    AuthenticationFailed,
    NotFound,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
)
from worker.core.redact import redact
from worker.core.settings import Settings
from worker.provider.disbursements import (
    Disbursement,
    ListPage,
    parse_disbursement,
    parse_page,
    unwrap_row,
)
from worker.provider.http_client import (
    HttpClient,
    from_transport_error,
    json_object,
    parse_retry_after,
)

__all__ = [
    "DetailsApi",
    "DetailsClient",
    "TokenProvider",
    "check_answer",
]

log = logging.getLogger(__name__)

# Runs before each request: a rate limiter's acquire (it may raise to give up).
Throttle = Callable[[], object]


def _unthrottled() -> None:
    return None


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
        row = unwrap_row(body)
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
        found = parse_page(body, number, what)
        for why in found.skipped:
            log.warning("details %s: row skipped", why)
        return found

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
