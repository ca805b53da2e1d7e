"""The REVIEW deadline: a payout still pending ``REVIEW_AFTER`` seconds after it was first
sent goes to a person (REVIEW), with the reason it was left pending.

Applied by a lookup that leaves an order pending (worker.flows.lookup): every pending order is
looked up on every pass, so none outlives its deadline by much more than an interval.
Counted from the first claim for sending, not from creation: a batch held for approval
for days is not sent to REVIEW as soon as it is approved.
"""

from __future__ import annotations

import logging

from worker.core.states import PENDING_STATES, State
from worker.ledger import Ledger, Order

log = logging.getLogger(__name__)


class ReviewDeadline:
    def __init__(self, ledger: Ledger, review_after: float) -> None:
        self.ledger = ledger
        self.review_after = review_after

    def enforce(self, order: Order, why: str) -> bool:
        """Move ``order`` to REVIEW if it is past its deadline, with ``why`` in its reason.

        True when this call moved it.
        """
        now = self.ledger.now_ms()
        limit_ms = self.review_after * 1000
        if now - order.created_ms <= limit_ms:
            return False  # cheap: not even created that long ago
        sent = self.ledger.first_claimed_ms(order.trade_no)
        if sent is None:
            sent = order.created_ms  # never claimed
        if now - sent <= limit_ms:
            return False  # e.g. held for approval for days, sent recently
        age = int((now - sent) / 1000)
        result = self.ledger.transition(
            order.trade_no,
            State.REVIEW,
            # The reconcile pass's rule, applied by the lookups it publishes.
            source="reconcile",
            expect=PENDING_STATES,
            note="deadline",
            reason=f"not final after {age}s: {why}",
        )
        if result.moved:
            log.warning(
                "not final %d s after it was sent (%s): moved to REVIEW",
                age,
                why,
                extra={"trade_no": order.trade_no},
            )
        return result.moved
