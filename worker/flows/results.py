"""What an enqueue (:class:`BatchResult`) and a retry (:class:`RetryResult`) did, as the
application and the ``disburse`` commands read it (worker.flows.producer makes them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas import RowError


@dataclass
class BatchResult:
    batch_id: str | None  # None when nothing was enqueued
    accepted: int  # orders this batch created (rows found by reference are ``existing``)
    rejected: list[RowError] = field(default_factory=list)
    trade_nos: list[str] = field(default_factory=list)
    existing: int = 0  # rows whose reference an earlier batch enqueued: its order is kept
    held: bool = False
    held_reason: str | None = None  # what it waits for (worker.flows.approvals)
    dry_run: bool = False
    # False: the batch is stored, but its messages could not be sent; the reconcile pass's
    # sweeper sends them (after SWEEP_AFTER). Never enqueue such a batch again.
    published: bool = True
    # The batch's idempotency key had been given to this batch, enqueued then (ms): nothing
    # new was stored or sent, and ``accepted`` and ``trade_nos`` are that batch's.
    duplicate_of: str | None = None
    duplicate_at_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "batch_id": self.batch_id,
            "accepted": self.accepted,
            "rejected": [{"row": e.row, "errors": e.errors} for e in self.rejected],
        }
        if not self.published:
            data["published"] = False
        if self.duplicate_of is not None:
            data["duplicate_of"] = self.duplicate_of
        if self.held:
            data["held"] = self.held_reason or "held"
        return data


@dataclass
class RetryResult(BatchResult):
    """A retry's new batch (``batch_id``), and for the retried batch's FAILED and REVERSED
    orders: the retry of each (tradeNo -> its retry's tradeNo) or why there is none.
    ``erased`` names those of ``not_retried`` that no retry can send, their fields being
    gone: only the application, from its own records, can enqueue them again."""

    retried_batch: str = ""
    retries: dict[str, str] = field(default_factory=dict)
    not_retried: dict[str, str] = field(default_factory=dict)
    erased: list[str] = field(default_factory=list)
    # Those of ``not_retried`` the provider did not confirm failed (its word in the reason).
    refused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "retried_batch": self.retried_batch,
            "retries": self.retries,
            "not_retried": self.not_retried,
            "erased": self.erased,
            "refused": self.refused,
        }
