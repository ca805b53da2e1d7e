"""What lookups (worker.flows.lookup) and the list walk (worker.flows.walk) both use: the
provider reads they make, the shared rate limit they take slots of, and the report of
what they did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from worker.provider.answers import PayoutResult
from worker.provider.details import Throttle
from worker.provider.disbursements import Disbursement


class PayoutQueries(Protocol):
    """What a lookup asks of a payout API client (worker.provider.vexora.VexoraClient)."""

    def query(self, trade_no: str) -> PayoutResult: ...


class DetailsReads(Protocol):
    """What a lookup asks of the details client (worker.provider.details.DetailsClient)."""

    def details(self, transaction_id: str, *, throttle: Throttle) -> Disbursement: ...


class Limiter(Protocol):
    """The shared details/query rate limit (worker.coordination.ratelimit.RateLimiter)."""

    def acquire(self, timeout: float | None = None) -> float: ...

    def penalize(self, seconds: float) -> None: ...


@dataclass
class LookupReport:
    """What one batch of lookups did; the lookup task publishes ``leftover`` again."""

    moved: dict[str, int] = field(default_factory=dict)  # "PROCESSING->SUCCEEDED": n, ...
    requeued: list[str] = field(default_factory=list)  # back to QUEUED: resubmit these
    review: list[str] = field(default_factory=list)  # moved to REVIEW past their deadline
    discrepancies: int = 0  # answers contradicting a final state
    errors: int = 0  # provider errors, 429s: asked again on a later pass
    # Not asked: the details API cannot be used now (no token, our credentials refused).
    # Asked again on a later pass.
    deferred: int = 0
    leftover: list[str] = field(default_factory=list)  # the rate-limit wait outlasted the budget

    def count(self, what: str) -> None:
        self.moved[what] = self.moved.get(what, 0) + 1

    def as_dict(self) -> dict[str, int]:
        return {
            **self.moved,
            "requeued": len(self.requeued),
            "review": len(self.review),
            "discrepancies": self.discrepancies,
            "errors": self.errors,
            "deferred": self.deferred,
            "leftover": len(self.leftover),
        }
