"""The states of a payout order, which ones are final, and what a provider report did."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    HELD = "HELD"  # batch waiting for approval
    QUEUED = "QUEUED"  # persisted, waiting for a worker
    SUBMITTING = "SUBMITTING"  # claimed by a worker; the POST may be in flight
    PROCESSING = "PROCESSING"  # the provider accepted it (0015)
    UNKNOWN = "UNKNOWN"  # sent, outcome not known: must be queried
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REVIEW = "REVIEW"  # needs a person: stuck past its deadline or contradictory reports


FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
# Where a payout's journey ends for the automation (REVIEW waits for a person).
SETTLED_STATES = FINAL_STATES | {State.REVIEW}
PENDING_STATES = frozenset({State.SUBMITTING, State.PROCESSING, State.UNKNOWN})


class Outcome(StrEnum):
    """What applying one provider report (submit answer, webhook, lookup) did to an order."""

    MOVED = "moved"  # the order took the reported state
    SAME = "same"  # it was already there (a replay): the provider's facts are refreshed
    DISCREPANCY = "discrepancy"  # contradicts a final state: recorded, never applied
    IGNORED = "ignored"  # not applicable now, e.g. PROCESSING after the order became final
    MISSING = "missing"  # no order has this tradeNo
