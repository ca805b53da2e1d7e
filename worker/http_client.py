"""What the two provider clients share: a pooled session without retries, its lifecycle,
and reading a JSON body. Failures are classified by each client (``worker.exceptions``).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# (connect, read) seconds: a connect timeout just over a TCP retransmit window.
DEFAULT_TIMEOUTS = (3.05, 15.0)


def pooled_session(pool_size: int = 10) -> requests.Session:
    """A ``requests.Session`` with a connection pool of ``pool_size`` and NO retries.

    ``Retry(0, read=False)`` is requests' own default, kept explicit: it makes
    urllib3 raise the error shapes :func:`worker.exceptions.never_sent` relies on.
    Redirects are refused per call (``allow_redirects=False``), never followed.
    """
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=4, pool_maxsize=pool_size, max_retries=Retry(0, read=False)
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def json_object(response: requests.Response) -> dict[str, Any] | None:
    """The response body as a JSON object (numbers with a fraction as Decimal), else None."""
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


class HttpClient:
    """A base URL, (connect, read) ``timeouts`` used on every call, and a session.

    A ``session`` passed in is the caller's: it is used as given (no adapter is
    mounted) and :meth:`close` leaves it open.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: tuple[float, float] = DEFAULT_TIMEOUTS,
        session: requests.Session | None = None,
        pool_size: int = 10,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = (float(timeouts[0]), float(timeouts[1]))
        self._owns_session = session is None
        self._session = session if session is not None else pooled_session(pool_size)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()
