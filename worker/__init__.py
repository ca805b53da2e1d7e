"""disburse: bulk payouts through a payout provider, on Celery and Redis.

The public API::

    import worker
    result = worker.enqueue_batch("ID", rows)        # BatchResult(batch_id, accepted, rejected)
    order = worker.enqueue("JP", {...})              # one payout -> Order
    worker.get_order(order.trade_no)                 # Order | None
    worker.batch_summary(result.batch_id)            # BatchSummary | None
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from worker.exceptions import (
    BatchNotFound,
    ConfigError,
    ConfigurationRejected,
    DisburseError,
    InputError,
    InvalidPayout,
    NotSent,
    OutcomeUnknown,
    ProviderError,
    Rejected,
    UnknownMarket,
)
from worker.ledger import BatchSummary, Order
from worker.producer import BatchResult
from worker.states import State

__all__ = [
    "BatchNotFound",
    "BatchResult",
    "BatchSummary",
    "ConfigError",
    "ConfigurationRejected",
    "DisburseError",
    "InputError",
    "InvalidPayout",
    "NotSent",
    "Order",
    "OutcomeUnknown",
    "ProviderError",
    "Rejected",
    "State",
    "UnknownMarket",
    "batch_summary",
    "enqueue",
    "enqueue_batch",
    "get_order",
]


def enqueue(market: str, payout: Mapping[str, Any], *, hold: bool = False) -> Order:
    """Validate, persist and publish one payout.

    Raises InvalidPayout naming each bad field, UnknownMarket for a bad market code.
    """
    from worker import runtime

    return runtime.producer().enqueue(market, payout, hold=hold)


def enqueue_batch(
    market: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    skip_invalid: bool = False,
    hold: bool = False,
    dry_run: bool = False,
) -> BatchResult:
    """Validate every row, then persist and publish all of them, or (by default) none.

    Rows are numbered from 1 in the errors of ``BatchResult.rejected``. Raises
    UnknownMarket for a bad market code.
    """
    from worker import runtime

    numbered = list(enumerate(rows, start=1))
    return runtime.producer().enqueue_batch(
        market, numbered, skip_invalid=skip_invalid, hold=hold, dry_run=dry_run
    )


def get_order(trade_no: str) -> Order | None:
    from worker import runtime

    return runtime.ledger().get(trade_no)


def batch_summary(batch_id: str) -> BatchSummary | None:
    from worker import runtime

    return runtime.ledger().batch(batch_id)
