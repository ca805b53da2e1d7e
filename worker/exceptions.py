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
text that comes from a provider goes through :func:`worker.redact.redact` first.
Mapping transport failures onto this tree is :mod:`worker.http_client`'s job.
"""

from __future__ import annotations

from typing import Any

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
]


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
