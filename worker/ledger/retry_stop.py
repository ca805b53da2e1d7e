"""A payout retried under a new tradeNo, then reported paid after all: its retry stops.

``disburse retry`` pays a FAILED payout again only once the provider confirms the failure
(worker.core.confirm); a success reported for it later (a late webhook, a lookup) still means
the retry may pay it twice. :func:`stop_retries` runs when the ledger records that
discrepancy (Ledger.apply_report): each retry in the chain (the retry, its retry, ...)
that was never claimed, so never sent, is CANCELLED; one that may have been sent goes to
REVIEW, for a person to check both with the provider. The FAILED original keeps its
state (final states never change) with the discrepancy recorded; ``disburse status``
of the retry's batch counts the retries stopped (worker.flows.report).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from worker.core.confirm import ORIGINAL_PAID
from worker.core.states import FINAL_STATES, State

if TYPE_CHECKING:
    from worker.ledger import Ledger, Source

log = logging.getLogger(__name__)

_NEVER_SENT = (State.HELD, State.QUEUED)


def stop_retries(ledger: Ledger, trade_no: str, source: Source) -> None:
    """The FAILED order ``trade_no`` was reported paid (by ``source``): stop its retries."""
    why = f"{ORIGINAL_PAID} ({trade_no})"
    for retry, state in ledger.retries_of(trade_no):
        if state in FINAL_STATES:
            if state is State.SUCCEEDED:
                log.error(
                    "%s after its retry %s was paid: paid twice?",
                    why,
                    retry,
                    extra={"trade_no": trade_no},
                )
            continue
        cancelled = ledger.transition(
            retry,
            State.CANCELLED,
            source=source,
            expect=_NEVER_SENT,
            attempts=0,  # never claimed, so never sent (the claim counts the attempt)
            note="original paid",
            reason=f"{why}: cancelled, never sent",
        )
        if cancelled.moved:
            log.warning("%s: its retry %s cancelled", why, retry, extra={"trade_no": trade_no})
            continue
        review = ledger.transition(
            retry,
            State.REVIEW,
            source=source,
            note="original paid",
            reason=f"{why}: this retry may have been sent too; check both with the provider",
        )
        if review.moved:
            log.error(
                "%s and its retry %s may have been sent: REVIEW",
                why,
                retry,
                extra={"trade_no": trade_no},
            )
