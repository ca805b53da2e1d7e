"""How long personal data stays: a FAILED order keeps its fields to send for
``FAILED_PAYLOAD_RETENTION`` (so that it can be retried: worker.flows.producer), then this step
of the reconcile pass erases them. A SUCCEEDED or CANCELLED order's are erased in the
update that makes it final, so a REVERSED one (SUCCEEDED first) has none to keep: only
one reversed before migration 0007 may still hold them, and this step erases those too
(ledger.PAYLOAD_KEPT). Only the masked copy stays."""

from __future__ import annotations

import logging

from worker.core.defaults import RETENTION_PAGES_PER_PASS
from worker.ledger import PAGE, Ledger

log = logging.getLogger(__name__)


def erase_expired(ledger: Ledger, retention: float) -> int:
    """Erase the fields of the final orders that keep them (ledger.PAYLOAD_KEPT) for longer than
    ``retention`` seconds, oldest first, a page per statement and at most
    ``RETENTION_PAGES_PER_PASS`` pages; returns how many were erased."""
    erased = 0
    for _ in range(RETENTION_PAGES_PER_PASS):
        page = ledger.erase_kept_payloads(retention, limit=PAGE)
        erased += page
        if page < PAGE:
            break
    if erased:
        log.info("erased the fields of %d final payouts past their retention", erased)
    return erased
