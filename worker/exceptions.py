"""Every error the provider clients raise, named after WHERE the failure happened.

The question a caller must answer after a failed payout call is "could money have
moved?". The hierarchy answers it by type:

    DisburseError
    └── ProviderError              something went wrong talking to a provider
        ├── NotSent                certainly never processed: retry with the same tradeNo
        │   └── RateLimited        HTTP 429 (``retry_after`` seconds, when given)
        ├── OutcomeUnknown         maybe processed: query before doing anything else
        │   └── AlreadySubmitted   the provider already has this tradeNo: query it
        ├── Rejected               a documented, final refusal (``code``, ``message``)
        │   └── ConfigurationRejected  bad signature / unknown merchant / IP not allowed:
        │                              operators must fix the config; not a payout failure
        ├── AuthenticationFailed   the details API refused our token (401, twice)
        └── NotFound               the provider does not know this transaction

Messages never carry secrets, request bodies, full account numbers or mobiles:
text that comes from a provider goes through :func:`redact` first.
"""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError

__all__ = [
    "AlreadySubmitted",
    "AuthenticationFailed",
    "ConfigurationRejected",
    "DisburseError",
    "NotFound",
    "NotSent",
    "OutcomeUnknown",
    "ProviderError",
    "RateLimited",
    "Rejected",
    "from_transport_error",
    "never_sent",
    "parse_retry_after",
    "redact",
]

# Runs of 7+ digits (account numbers, mobiles) keep only their last 4 digits.
_LONG_DIGITS = re.compile(r"\d{7,}")
_MAX_TEXT = 300


def redact(text: Any, limit: int = _MAX_TEXT) -> str:
    """Provider-supplied text made safe for messages and logs.

    Long digit runs (account numbers, phone numbers) are masked to their last four
    digits and the text is cut to ``limit`` characters. Providers sometimes echo the
    request back in their error messages; this keeps it out of our logs.
    """
    value = _LONG_DIGITS.sub(lambda m: "*" * 4 + m.group(0)[-4:], str(text))
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _restore(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class DisburseError(Exception):
    """Base of every error this package raises on purpose."""

    def __reduce__(self) -> Any:
        # Subclasses take their own constructor arguments; rebuild from state so
        # pickling (Celery result backends, multiprocessing) works for all of them.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ProviderError(DisburseError):
    """Something went wrong talking to a provider.

    ``status_code`` is the HTTP status when there was a response; ``code`` the
    provider's own error code when it sent one.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code

    def __str__(self) -> str:
        return self.message


class NotSent(ProviderError):
    """The request was certainly never processed (refused, connect timeout, 429).

    Safe to retry with the same tradeNo.
    """


class RateLimited(NotSent):
    """HTTP 429: the provider asks us to slow down; ``retry_after`` in seconds, if given."""

    def __init__(
        self,
        message: str = "rate limited by the provider (HTTP 429)",
        *,
        retry_after: float | None = None,
        status_code: int | None = 429,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.retry_after = retry_after


class OutcomeUnknown(ProviderError):
    """The request may have been processed: read timeout, 5xx, reset after sending,
    an unparseable body, an unknown code or status. The payout must be queried."""


class AlreadySubmitted(OutcomeUnknown):
    """The provider says this tradeNo was already used: query it, never resubmit."""


class Rejected(ProviderError):
    """A documented, final refusal of the request: ``code`` and ``message`` from the provider."""

    code: str

    def __init__(self, code: str, message: str, *, status_code: int | None = None) -> None:
        super().__init__(
            f"rejected by the provider: code {code}: {message}",
            status_code=status_code,
            code=code,
        )
        # The provider's own text (already redacted by the client), for the ledger.
        self.message = message

    def __str__(self) -> str:
        return f"rejected by the provider: code {self.code}: {self.message}"


class ConfigurationRejected(Rejected):
    """Systemic refusal (bad signature, unknown merchant, IP not allowed).

    Operators must fix the configuration; this is never a payout's own failure,
    and every other request will be refused the same way until it is fixed.
    """

    def __str__(self) -> str:
        return (
            f"provider refused our configuration (code {self.code}: {self.message}); "
            "check merchant number, app secret and the server's registered IP"
        )


class AuthenticationFailed(ProviderError):
    """The details API refused our credentials or token (401 after one refresh)."""


class NotFound(ProviderError):
    """The provider does not know this transaction (details 404, query of an unknown tradeNo)."""


# --- mapping transport failures -------------------------------------------------------

# Raised by requests before a connection exists: the request cannot have been sent.
_BEFORE_CONNECT = (
    requests.exceptions.URLRequired,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps: args[0], urllib3's ``reason``, __cause__/__context__."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in found) or len(found) > 20:
            continue
        found.append(current)
        first = current.args[0] if current.args else None
        reason = getattr(current, "reason", None)
        todo.extend(
            candidate if isinstance(candidate, BaseException) else None
            for candidate in (first, reason, current.__cause__, current.__context__)
        )
    return found


def never_sent(exc: requests.RequestException) -> bool:
    """True when ``exc`` certainly happened before any byte of the request left.

    How requests/urllib3 report the cases (requests' default adapter has
    ``Retry(0, read=False)``):

    - connection refused, DNS failure: ``requests.ConnectionError`` wrapping
      ``MaxRetryError(reason=NewConnectionError)`` (NameResolutionError is a subclass);
    - connect timeout: ``requests.ConnectTimeout`` wrapping
      ``MaxRetryError(reason=ConnectTimeoutError)``;
    - read timeout: ``requests.ReadTimeout`` (from urllib3's ``ReadTimeoutError``);
    - reset / closed after the request was written: ``requests.ConnectionError``
      wrapping ``ProtocolError("Connection aborted.", ConnectionResetError |
      RemoteDisconnected)``;
    - body cut short: ``requests.exceptions.ChunkedEncodingError``.

    ``NewConnectionError`` subclasses ``ConnectTimeoutError`` in urllib3 2, so one
    isinstance check covers both connect-phase failures.
    """
    if isinstance(exc, (requests.ConnectTimeout, *_BEFORE_CONNECT)):
        return True
    if isinstance(exc, (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError)):
        return False
    if isinstance(exc, requests.ConnectionError):
        return any(isinstance(cause, ConnectTimeoutError) for cause in _causes(exc))
    return False


def from_transport_error(exc: requests.RequestException, what: str) -> ProviderError:
    """The :class:`ProviderError` for a failed HTTP exchange; ``what`` names the call.

    Connect-phase failures become :class:`NotSent`; everything else (read timeout,
    reset after sending, truncated body, anything unrecognised) :class:`OutcomeUnknown`.
    The message names the failure class only, never the URL's query or any body.
    """
    kind = type(exc).__name__
    if never_sent(exc):
        return NotSent(f"{what}: not sent ({kind}: could not connect)")
    if isinstance(exc, requests.ReadTimeout):
        return OutcomeUnknown(f"{what}: outcome unknown (read timeout after sending)")
    return OutcomeUnknown(f"{what}: outcome unknown ({kind} after the request may have been sent)")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, seconds)
