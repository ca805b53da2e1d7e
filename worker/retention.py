"""How long personal data stays: a FAILED or REVERSED order keeps its fields to send for
``FAILED_PAYLOAD_RETENTION`` (so that it can be retried: worker.producer), then this
step of the reconcile pass erases them, as any other final order's are erased when it
becomes final. Only the masked copy stays."""

from __future__ import annotations

import logging

from worker.ledger import PAGE, Ledger

log = logging.getLogger(__name__)


def erase_expired(ledger: Ledger, retention: float) -> int:
    """Erase the fields of every FAILED and REVERSED order final for longer than
    ``retention`` seconds, a page per statement; returns how many were erased."""
    erased = 0
    while True:
        page = ledger.erase_kept_payloads(retention, limit=PAGE)
        erased += page
        if page < PAGE:
            break
    if erased:
        log.info("erased the fields of %d failed payouts past their retention", erased)
    return erased
