"""The states of a payout order, how it may move between them, which ones are final, and
what a provider report did."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


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
    REVERSED = "REVERSED"  # SUCCEEDED, then the provider's details API says it failed after all


# Where an order may go from each state: the one transition table of the program.
TRANSITIONS: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        State.HELD: frozenset({State.QUEUED, State.CANCELLED}),
        # A provider report may find an order back in QUEUED whose earlier POST did arrive
        # after all: the report wins, and the resubmission is refused as a repeat tradeNo.
        State.QUEUED: frozenset(
            {
                State.SUBMITTING,
                State.CANCELLED,
                State.REVIEW,
                State.PROCESSING,
                State.SUCCEEDED,
                State.FAILED,
            }
        ),
        State.SUBMITTING: frozenset(
            {
                State.PROCESSING,
                State.SUCCEEDED,
                State.FAILED,
                State.UNKNOWN,
                State.QUEUED,
                State.REVIEW,
            }
        ),
        State.PROCESSING: frozenset({State.SUCCEEDED, State.FAILED, State.REVIEW}),
        State.UNKNOWN: frozenset(
            {State.PROCESSING, State.SUCCEEDED, State.FAILED, State.REVIEW, State.QUEUED}
        ),
        # A person decides, after checking with the provider.
        State.REVIEW: frozenset({State.SUCCEEDED, State.FAILED}),
        State.SUCCEEDED: frozenset({State.REVERSED}),
        State.FAILED: frozenset(),
        State.CANCELLED: frozenset(),
        State.REVERSED: frozenset(),
    }
)
# The same table read the other way: the states an order may enter ``target`` from.
ALLOWED_FROM: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        target: frozenset(source for source, targets in TRANSITIONS.items() if target in targets)
        for target in State
    }
)

# Never change again, except SUCCEEDED -> REVERSED.
FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.REVERSED})
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
    # A failure that may be the provider refusing a repeat (worker.core.confirm): recorded, not
    # applied; the order stays pending until both of the provider's APIs confirm it.
    UNCONFIRMED = "unconfirmed"
    # Names another provider id than the one stored: the order went to REVIEW (both ids
    # recorded), or, final, keeps its state with a discrepancy recorded.
    OTHER_ID = "other_id"
