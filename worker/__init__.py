"""disburse: bulk payouts through a payout provider, on Celery, PostgreSQL and Redis.

The public API::

    import worker
    result = worker.enqueue_batch("ID", rows)        # BatchResult(batch_id, accepted, rejected)
    order = worker.enqueue("JP", {...})              # one payout -> Order
    worker.get_order(order.trade_no)                 # Order | None
    worker.batch_summary(result.batch_id)            # BatchSummary | None
    worker.approve(batch_id, operator="bob")         # ControlResult(moved, message, held)
    worker.cancel(batch_id)                          # ControlResult
    worker.pause("reason")                           # Paused(switches, records, already)
    worker.resume()                                  # Resumed(was_paused, published, ...)
    worker.events(after=cursor, limit=100)           # [Event], oldest first; event.cursor
    worker.follow_events(after=cursor)               # the same, waiting for new ones
    worker.verify_webhook(body, header, secret)      # the application's side of webhooks
    worker.review(batch=None)                        # [Order] in REVIEW, longest waiting first
    worker.resolve(trade_no, "failed", note="...")   # Order, once the provider agrees
    worker.retry(batch, hold=False)                  # RetryResult: FAILED enqueued again
    worker.audit(batch_id=None, since=None)          # [AuditEvent]: who did what, oldest first

The errors an application sees: ``InvalidPayout`` and ``UnknownMarket`` (enqueue),
``IdempotencyKeyReused`` (enqueue_batch), ``BatchNotFound`` (approve, cancel, review,
retry), ``OrderNotFound``, ``NotInReview`` and ``DecisionRefused`` (resolve),
``AlreadyRetried`` (retry), ``ApprovalRefused`` (approve: four eyes), ``ConfigError``
(the settings; ``MarketUnavailable`` for a market without a provider account),
``DatabaseUnavailable`` (no PostgreSQL connection: the server's reason), and
``DisburseError``. The workers' errors about the provider stay in
:mod:`worker.core.exceptions`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.core.exceptions import (
        AlreadyRetried,
        ApprovalRefused,
        BatchNotFound,
        ConfigError,
        DecisionRefused,
        DisburseError,
        IdempotencyKeyReused,
        InputError,
        InvalidPayout,
        NotInReview,
        OrderNotFound,
        UnknownMarket,
    )
    from worker.core.states import State
    from worker.flows.controls import ControlResult, Paused, Resumed
    from worker.flows.results import BatchResult, RetryResult
    from worker.ledger import BatchSummary, Order
    from worker.ledger.audit import AuditEvent
    from worker.outbox import Event, verify_webhook

    __version__: str

# The public names defined elsewhere, and the module of each: imported on first use, so
# that ``import worker`` (and every ``disburse`` command, which imports it first) does
# not load PostgreSQL's, Redis's and Celery's libraries before it needs them.
_ELSEWHERE = {
    **dict.fromkeys(
        (
            "AlreadyRetried",
            "ApprovalRefused",
            "BatchNotFound",
            "ConfigError",
            "DecisionRefused",
            "DisburseError",
            "IdempotencyKeyReused",
            "InputError",
            "InvalidPayout",
            "NotInReview",
            "OrderNotFound",
            "UnknownMarket",
        ),
        "worker.core.exceptions",
    ),
    "State": "worker.core.states",
    **dict.fromkeys(("ControlResult", "Paused", "Resumed"), "worker.flows.controls"),
    **dict.fromkeys(("BatchResult", "RetryResult"), "worker.flows.results"),
    **dict.fromkeys(("BatchSummary", "Order"), "worker.ledger"),
    **dict.fromkeys(("Event", "verify_webhook"), "worker.outbox"),
}


def __getattr__(name: str) -> Any:
    """The public names of :data:`_ELSEWHERE`, and ``__version__``: the installed
    distribution's (one number, kept in pyproject.toml)."""
    if name == "__version__":
        from importlib import metadata

        value: Any = metadata.version("disburse")
    elif name in _ELSEWHERE:
        value = getattr(importlib.import_module(_ELSEWHERE[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # found once: the next use is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AlreadyRetried",
    "ApprovalRefused",
    "BatchNotFound",
    "BatchResult",
    "BatchSummary",
    "ConfigError",
    "ControlResult",
    "DecisionRefused",
    "DisburseError",
    "Event",
    "IdempotencyKeyReused",
    "InputError",
    "InvalidPayout",
    "NotInReview",
    "Order",
    "OrderNotFound",
    "Paused",
    "Resumed",
    "RetryResult",
    "State",
    "UnknownMarket",
    "__version__",
    "approve",
    "audit",
    "batch_summary",
    "cancel",
    "enqueue",
    "enqueue_batch",
    "events",
    "follow_events",
    "get_order",
    "pause",
    "resolve",
    "resume",
    "retry",
    "review",
    "verify_webhook",
]


def enqueue(
    market: str,
    payout: Mapping[str, Any],
    *,
    hold: bool = False,
    operator: str | None = None,
    not_before: datetime | None = None,
) -> Order:
    """Validate, persist and publish one payout (a batch of one: see :func:`enqueue_batch`).

    Raises InvalidPayout naming each bad field (also a payout the policy refuses),
    UnknownMarket for a bad market code, MarketUnavailable (a ConfigError) for a market
    without a provider account.
    """
    from worker.celery import runtime

    return runtime.producer().enqueue(
        market, payout, hold=hold, operator=operator, not_before=not_before
    )


def enqueue_batch(
    market: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    skip_invalid: bool = False,
    hold: bool = False,
    dry_run: bool = False,
    idempotency_key: str | None = None,
    operator: str | None = None,
    not_before: datetime | None = None,
) -> BatchResult:
    """Validate every row, then persist and publish all of them, or (by default) none.

    Rows are numbered from 1 in the errors of ``BatchResult.rejected``. Once the batch is
    stored this succeeds: ``published`` is False when its messages could not be sent
    (the reconcile pass sends them; do not enqueue the rows again). An
    ``idempotency_key`` (1-200 printable ASCII characters) given again with the same rows
    within IDEMPOTENCY_WINDOW returns the first batch (``duplicate_of``), storing and
    sending nothing. Raises UnknownMarket for a bad market code, MarketUnavailable (a
    ConfigError) for a market without a provider account, IdempotencyKeyReused when the
    key was given to other rows.

    Under DISBURSE_POLICY a row over its market's ``max_payout`` or whose beneficiary would
    pass its daily limit is a row error, and the batch waits HELD (``held``, with the
    reason in ``held_reason``) while it needs approvals, until ``not_before`` (an aware
    datetime), or while it would pass the daily limit. ``operator`` (else
    DISBURSE_OPERATOR, else the login name) is the batch's ``created_by``: it may not
    approve it.
    """
    from worker.celery import runtime

    numbered = list(enumerate(rows, start=1))
    return runtime.producer().enqueue_batch(
        market,
        numbered,
        skip_invalid=skip_invalid,
        hold=hold,
        dry_run=dry_run,
        idempotency_key=idempotency_key,
        operator=operator,
        not_before=not_before,
    )


def get_order(trade_no: str) -> Order | None:
    from worker.celery import runtime

    return runtime.ledger().get(trade_no)


def batch_summary(batch_id: str) -> BatchSummary | None:
    from worker.celery import runtime

    return runtime.ledger().batch(batch_id)


def approve(
    batch_id: str,
    *,
    check_balance: bool = True,
    operator: str | None = None,
    note: str | None = None,
    override_limit: bool = False,
) -> ControlResult:
    """Give ``operator``'s approval (else DISBURSE_OPERATOR, else the login name) to a
    HELD batch, and release it when nothing else holds it: enough approvals, its
    schedule, its account's balance, the daily limit (``override_limit`` with a ``note``
    lets it past that). Else ``held`` says what it waits for and
    ``approvals_remaining`` how many approvals are missing. Raises BatchNotFound,
    ApprovalRefused (the batch's creator, a second approval by the same person, or
    APPROVALS_REQUIRE_LOGIN set)."""
    from worker.celery import runtime

    return runtime.approvals().approve(
        batch_id,
        operator=operator,
        note=note,
        override_limit=override_limit,
        check_balance=check_balance,
    )


def cancel(batch_id: str, operator: str | None = None) -> ControlResult:
    """Cancel every order of the batch never POSTed (HELD, or QUEUED and never sent); the
    others are listed in ``ControlResult.not_cancelled``. Raises BatchNotFound."""
    from worker.celery import runtime

    return runtime.batch_controls().cancel(batch_id, operator)


def pause(reason: str, operator: str | None = None) -> Paused:
    """Stop every submission, cluster-wide, until :func:`resume`; kept in PostgreSQL with
    who (``operator``, else DISBURSE_OPERATOR or the login name) and why. Already paused:
    the first pause stays as it was (``Paused.already``)."""
    from worker.celery import runtime

    return runtime.batch_controls().pause(reason, operator)


def resume(operator: str | None = None) -> Resumed:
    """Restart submissions: clear every stop switch, also one a provider account's
    systemic rejection or the circuit breaker set, and publish the QUEUED orders again."""
    from worker.celery import runtime

    return runtime.batch_controls().resume(operator)


def review(batch: str | None = None) -> list[Order]:
    """The orders waiting for a person (REVIEW), of one batch or all, the longest waiting
    first; each says why (``reason``) and what the provider last said
    (``provider_status``, ``provider_message``). Raises BatchNotFound."""
    from worker.celery import runtime

    return runtime.decisions().pending(batch)


def resolve(
    trade_no: str, decision: State | str, *, note: str, operator: str | None = None
) -> Order:
    """Decide an order in REVIEW: ``"succeeded"`` or ``"failed"``, once the provider's
    answer, asked now, agrees (else DecisionRefused says what it said, and nothing
    changes). ``operator`` defaults to DISBURSE_OPERATOR, else the login name; it and
    the note go into the order's history."""
    from worker.celery import runtime
    from worker.core.config import get_settings

    name = operator if operator is not None else get_settings().operator
    return runtime.decisions().resolve(trade_no, decision, note=note, operator=name)


def retry(batch: str, *, hold: bool = False, operator: str | None = None) -> RetryResult:
    """Enqueue the batch's FAILED and REVERSED orders again as a new batch (new tradeNos,
    each linked to the order it retries), while they keep their fields
    (FAILED_PAYLOAD_RETENTION; a REVERSED order's were erased when it succeeded: it is in
    the result's ``not_retried`` and ``erased``). An order is retried at most once, and
    only once the provider, asked through both of its APIs, confirms it failed (else it
    is in ``not_retried`` with the provider's word, and in ``refused``).
    Raises BatchNotFound."""
    from worker.celery import runtime

    return runtime.producer().retry(batch, hold=hold, operator=operator)


def audit(
    *, since: datetime | None = None, batch_id: str | None = None, limit: int = 1000
) -> list[AuditEvent]:
    """The operator actions (enqueue, approve, cancel, pause, resume, resolve, retry,
    redeliver, the policy loaded), oldest first: who, what, which batch or payout, when,
    from where, the note."""
    from worker.celery import runtime

    return runtime.ledger().audit_events(since=since, batch_id=batch_id, limit=limit)


def events(after: int = 0, limit: int = 100, *, batch_id: str | None = None) -> list[Event]:
    """The payouts' changes of state after the cursor ``after`` (an ``Event.cursor``, 0
    for the beginning), oldest first, at most ``limit``: every event committed before
    the call, never one past an event still being committed. No personal data."""
    from worker.celery import runtime

    return runtime.feed().read(after, limit, wait=5.0, batch_id=batch_id).events


def follow_events(
    after: int = 0, *, batch_id: str | None = None, poll: float = 1.0
) -> Iterator[Event]:
    """:func:`events`, then every new event as it is committed (checking every ``poll``
    seconds); never ends. Keep the last ``Event.cursor`` to resume after a restart."""
    from worker.celery import runtime

    return runtime.feed().follow(after, poll=poll, batch_id=batch_id)
