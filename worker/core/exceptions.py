"""Every error disburse raises on purpose, named after what went wrong and where.

One base, :class:`DisburseError`, so an application can catch everything of ours in
one clause. Below it, two questions tell the branches apart:

* was it something WE were handed (the caller's input, the operator's settings)?
  Then nothing happened, and a person fixes the input or the setting;
* or did talking to a PROVIDER fail? Then the type answers "could money have moved?".

::

    DisburseError
    ├── InputError                 what the caller handed us is wrong; nothing was changed
    │   ├── InvalidPayout          a payout's fields (``errors``: field -> messages)  [ValueError]
    │   ├── UnknownMarket          not a market code we pay out in                  [ValueError]
    │   ├── InvalidFile            a rows file that cannot be used as a whole       [ValueError]
    │   ├── BatchNotFound          no batch with this id                           [LookupError]
    │   ├── OrderNotFound          no order with this tradeNo                      [LookupError]
    │   ├── NotInReview            a decision for an order that is not in REVIEW
    │   ├── DecisionRefused        a REVIEW decision the provider's answer contradicts
    │   ├── AlreadyRetried         another retry of the same orders committed first
    │   └── IdempotencyKeyReused   a batch's idempotency key given before to other rows
    ├── ConfigError                a setting is missing or malformed: fix it, restart [ValueError]
    │   ├── SchemaBehind           the database lacks migrations this code needs
    │   └── MarketUnavailable      no provider account is configured for this market
    ├── DatabaseUnavailable        no PostgreSQL connection in time; says the server's reason
    │                              [psycopg_pool.PoolTimeout, so psycopg.OperationalError]
    ├── RateLimitTimeout           our own limiter had no slot in time: nothing sent [TimeoutError]
    └── ProviderError              something went wrong talking to a provider
        ├── NotSent                certainly never processed: retry with the same tradeNo
        │   └── RateLimited        HTTP 429 (``retry_after`` seconds, when given)
        ├── OutcomeUnknown         maybe processed: query before doing anything else
        │   ├── AlreadySubmitted   the provider already has this tradeNo: query it
        │   └── Refused            a submit refused with a top-level code we do not know
        ├── Rejected               a documented, final refusal (``code``, ``message``)
        │   └── ConfigurationRejected  bad signature / unknown merchant / IP not allowed:
        │                              operators must fix the config; not a payout failure
        ├── AuthenticationFailed   the details API refused our credentials or token
        ├── TokenUnavailable       no details-API token right now (fetch failed, backing
        │                          off, or timed out); details calls are reads: nothing moved
        └── NotFound               the provider does not know this transaction

A second base in brackets is kept where callers catch the built-in kind.

Messages never carry secrets, request bodies, full account numbers or mobiles: text
that comes from a provider goes through :func:`worker.core.redact.redact` first. This
module holds the hierarchy only: mapping transport failures onto it is
:mod:`worker.provider.http_client`'s job.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from psycopg_pool import PoolTimeout

__all__ = [
    "AlreadyRetried",
    "AlreadySubmitted",
    "AuthenticationFailed",
    "BatchNotFound",
    "ConfigError",
    "ConfigurationRejected",
    "DatabaseUnavailable",
    "DecisionRefused",
    "DisburseError",
    "IdempotencyKeyReused",
    "InputError",
    "InvalidFile",
    "InvalidPayout",
    "MarketUnavailable",
    "NotFound",
    "NotInReview",
    "NotSent",
    "OrderNotFound",
    "OutcomeUnknown",
    "ProviderError",
    "RateLimitTimeout",
    "RateLimited",
    "Refused",
    "Rejected",
    "SchemaBehind",
    "TokenUnavailable",
    "UnknownMarket",
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


# --- what we were handed ----------------------------------------------------------------


class InputError(DisburseError):
    """What the caller handed us is wrong; nothing was enqueued or changed."""


class InvalidPayout(InputError, ValueError):
    """A payout failed validation; ``errors`` maps each field to its messages."""

    def __init__(self, errors: Mapping[str, Any]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in errors.items())
        super().__init__(f"invalid payout: {detail}")


class UnknownMarket(InputError, ValueError):
    """The market code is not one we pay out in; the message lists the ones we do."""

    def __init__(self, market: object, known: Iterable[str]) -> None:
        super().__init__(f"unknown market {market!r}: expected one of {', '.join(sorted(known))}")
        self.market = market


class ApprovalRefused(InputError):
    """An approval the four-eyes rule refuses (the batch's creator, a second approval by
    the same person, APPROVALS_REQUIRE_LOGIN from a command line): nothing changed."""


class InvalidFile(InputError, ValueError):
    """A rows file cannot be used as a whole (unreadable, not UTF-8, no rows, a bad header).

    A problem with one row is that row's error, not this.
    """


class BatchNotFound(InputError, LookupError):
    """No batch with this id."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch {batch_id}")
        self.batch_id = batch_id


class OrderNotFound(InputError, LookupError):
    """No order with this tradeNo."""

    def __init__(self, trade_no: str) -> None:
        super().__init__(f"no order {trade_no}")
        self.trade_no = trade_no


class NotInReview(InputError):
    """A person's decision for an order that is not (or no longer) in REVIEW: nothing changed."""

    def __init__(self, trade_no: str, state: str) -> None:
        super().__init__(f"order {trade_no} is {state}, not REVIEW: nothing changed")
        self.trade_no = trade_no
        self.state = state


class DecisionRefused(InputError):
    """A REVIEW decision that contradicts what the provider answers now: nothing changed.

    ``provider_said`` is that answer, in words (state, the provider's status and message).
    """

    def __init__(self, trade_no: str, decision: str, provider_said: str) -> None:
        super().__init__(
            f"order {trade_no} not marked {decision}: the provider says {provider_said}; "
            "nothing changed"
        )
        self.trade_no = trade_no
        self.decision = decision
        self.provider_said = provider_said


class AlreadyRetried(InputError):
    """Another retry of some of the same orders committed first: nothing was enqueued
    (an order is retried at most once); run the retry again for what is left."""

    def __init__(self) -> None:
        super().__init__(
            "another retry of these payouts committed first: nothing was enqueued; "
            "run the retry again for what is left"
        )


class IdempotencyKeyReused(InputError):
    """The idempotency key was given, within IDEMPOTENCY_WINDOW, to batch ``batch_id`` of
    other rows: nothing was enqueued (returning that batch would hide the new rows)."""

    def __init__(self, key: str, batch_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was given to batch {batch_id} with other rows: "
            "nothing was enqueued; new rows need a new key"
        )
        self.key = key
        self.batch_id = batch_id


# --- the operator's settings ------------------------------------------------------------


class ConfigError(DisburseError, ValueError):
    """A setting in the environment is missing or malformed."""


class SchemaBehind(ConfigError):
    """The database lacks migrations this code needs; the message names the command."""

    def __init__(self, missing: Collection[int], upgrade_command: str) -> None:
        self.missing = sorted(missing)
        listed = ", ".join(f"{version:04d}" for version in self.missing)
        super().__init__(
            f"the database schema is behind this version of disburse (missing migrations "
            f"{listed}): run `{upgrade_command}`"
        )


class MigrationLocked(DisburseError):
    """A migration could not take a lock it needs within its lock timeout, tries over:
    another session holds it; nothing of that migration was applied."""


class MarketUnavailable(ConfigError):
    """No complete provider account for ``market``: nothing of it is enqueued or sent.

    ``missing`` names the settings to set (the market's own, then the plain ones).
    """

    def __init__(self, market: str, own: Iterable[str], plain: Iterable[str]) -> None:
        self.market = market
        self.missing = tuple(own)
        super().__init__(
            f"market {market} is not configured: set {_listed(self.missing)} "
            f"(or {_listed(plain)} for every market)"
        )


def _listed(names: Iterable[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    items = list(names)
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1]


# --- our servers ------------------------------------------------------------------------


class DatabaseUnavailable(DisburseError, PoolTimeout):
    """No PostgreSQL connection within the pool's wait; the message is one line with
    the server's (or libpq's) own reason, the URL's password masked.

    Also a ``psycopg_pool.PoolTimeout`` (so a ``psycopg.OperationalError``): code that
    retries on those retries on this.
    """


# --- our own limits ---------------------------------------------------------------------


class RateLimitTimeout(DisburseError, TimeoutError):
    """No slot of the cluster-wide rate limit could be taken before the caller's timeout.

    Nothing was sent: the request waits for a later slot.
    """


# --- talking to a provider --------------------------------------------------------------


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


class Refused(OutcomeUnknown):
    """A submit refused at the top level with a code we do not know (``code``): the
    request was not accepted, but what the code means is not documented. A first
    attempt is sent again later (the same tradeNo: a provider that has it refuses the
    repeat) and counted by the circuit breaker (worker.coordination.breaker); a later one is
    queried."""


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
    """The details API refused our credentials (token fetch) or a fresh token (401 twice)."""


class TokenUnavailable(ProviderError):
    """No details-API token can be had right now: the fetch failed, the cluster is backing
    off after a failure, or no token arrived in time. No details request was sent."""


class NotFound(ProviderError):
    """The provider does not know this transaction (details 404, query of an unknown tradeNo)."""
