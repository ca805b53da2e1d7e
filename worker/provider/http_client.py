"""What the provider clients share: a pooled session without retries, its lifecycle,
reading a body within a total deadline, reading a JSON body, and what a failed HTTP
exchange means for the request.

A transport failure (no response at all) becomes :class:`~worker.core.exceptions.NotSent`
when the request certainly never left, else :class:`~worker.core.exceptions.OutcomeUnknown`
(:func:`from_transport_error`). Answers that did arrive are classified by each client.
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, DecodeError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from worker.core.exceptions import NotSent, OutcomeUnknown, ProviderError


def pooled_session(url: str, pool_size: int = 10) -> requests.Session:
    """A ``requests.Session`` for calls to ``url``'s host, with a connection pool of
    ``pool_size`` and NO retries.

    ``Retry(0, read=False)`` is requests' own default, kept explicit: it makes
    urllib3 raise the error shapes :func:`never_sent` relies on.
    Redirects are refused per call (``allow_redirects=False``), never followed.

    What requests reads from the environment (its proxy variables, honouring
    ``NO_PROXY`` for ``url``, and ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) is read
    once, here, instead of on every request: that scan of the whole environment cost
    about a fifth of a payout's CPU in the submit path (BENCHMARKS.md). ``.netrc`` is
    not read: every call carries its own credentials.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = HTTPAdapter(
        pool_connections=4, pool_maxsize=pool_size, max_retries=Retry(0, read=False)
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# Bytes asked for per read of a streamed body (at most one receive each).
_READ_SIZE = 65536


def read_by(response: requests.Response, deadline: float) -> None:
    """Read the body of ``response`` (sent with ``stream=True``) by ``deadline``
    (``time.monotonic()``), then release its connection; ``response.content`` is then
    the body.

    The per-read timeout alone lets a provider that drips its body (a byte now and
    then, each within the read timeout) hold the call for as long as it likes. Here
    every receive waits at most for the time left, so the body is whole by the
    deadline or the call fails: ``requests.ReadTimeout`` (the request was sent, so the
    outcome is unknown), or the error requests itself raises for a body cut short.
    The connection of a body not read whole is closed, never reused.
    """
    raw = response.raw
    parts: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise requests.ReadTimeout("the answer was not whole by the call's deadline")
            connection = raw.connection
            if connection is not None and connection.sock is not None:
                connection.sock.settimeout(left)
            part = raw.read1(_READ_SIZE, decode_content=True)
            if not part:
                break
            parts.append(part)
    except ReadTimeoutError as exc:  # as requests' own reading of a body maps them
        response.close()
        raise requests.ReadTimeout(exc) from exc
    except ProtocolError as exc:
        response.close()
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        response.close()
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except BaseException:
        response.close()
        raise
    # What requests' Response.content keeps once it has read a body.
    response._content = b"".join(parts)
    raw.release_conn()


def json_object(response: requests.Response) -> dict[str, Any] | None:
    """The response body as a JSON object (numbers with a fraction as Decimal), else None."""
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


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


class HttpClient:
    """A base URL, (connect, read) ``timeouts`` used on every call (``Settings.timeouts``
    in production), and a session. A call's whole exchange, body included, ends within
    ``total_timeout`` (:func:`read_by`), which the task time limits count.

    A ``session`` passed in is the caller's: it is used as given (no adapter is
    mounted) and :meth:`close` leaves it open.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: tuple[float, float],
        session: requests.Session | None = None,
        pool_size: int = 10,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = (float(timeouts[0]), float(timeouts[1]))
        self._owns_session = session is None
        self._session = session if session is not None else pooled_session(self.base_url, pool_size)

    @property
    def total_timeout(self) -> float:
        """The longest one call takes: connecting, then the answer, its body included."""
        return sum(self.timeouts)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()
