"""The ledger as one object: each part of it (reads, enqueue, batches, retention, the
transition engine and the provider's reports on it, approvals, the audit trail) is a
class of its own module over the same pool; :class:`Ledger` is all of them."""

from __future__ import annotations

from worker.ledger.audit import Audit
from worker.ledger.batches import Batches
from worker.ledger.enqueue import Enqueue
from worker.ledger.history import History
from worker.ledger.reports import Reports
from worker.ledger.retention import Retention
from worker.ledger.users import Users


class Ledger(Enqueue, Batches, Retention, Reports, Audit, History, Users):
    """Orders, transitions, batch counts and pending scans, in PostgreSQL.

    ``Ledger(pool, on_final=...)``: ``on_final(state, n)`` is told of every ``n`` orders
    a transition made final in ``state`` (the metrics count them: worker.metrics);
    ``claim_ttl`` (LEASE_TTL) is how long a claim is leased from the claim or its renewal.
    """
