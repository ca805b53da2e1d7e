"""The order ledger in PostgreSQL: the system of record for where every payout stands.

Tables (``worker/db/migrations``): ``batches``, ``orders`` (one row per payout, with
its exact fields to send in ``payload`` until it is final (a FAILED one's until the
retention window ends, so it can be retried: worker.retention), and a masked copy for
good) and ``order_events``
(append-only, one row per change). Every change of state is one statement, hence one
transaction and one round trip: lock the orders, update those whose state the
transition table (:data:`worker.states.TRANSITIONS`) lets move, and insert their
event rows. Times come from the server's clock; amounts are ``numeric`` and come back
as ``Decimal``.

Connections come from a :class:`psycopg_pool.ConnectionPool`, each checked out for
one short exchange and put in autocommit (a lone statement is its own transaction:
no extra round trips for BEGIN and COMMIT). None is held while a caller waits on
anything else, such as an HTTP call. Where one commit (one flush to disk) for several
changes pays, one statement makes them: the submit path claims a group of orders and
applies the answers to the group before in one (:meth:`Ledger.claim_many`).

The package: :mod:`~worker.ledger.model` (row types), :mod:`~worker.ledger.sql`
(statement text), :mod:`~worker.ledger.queries` (reads, and the connection),
:mod:`~worker.ledger.enqueue`, :mod:`~worker.ledger.transitions` (the engine),
:mod:`~worker.ledger.reports` (the provider's reports applied),
:mod:`~worker.ledger.batches`, :mod:`~worker.ledger.retention`, and
:mod:`~worker.ledger.facade` (the :class:`Ledger` of them all).
"""

from worker.ledger.facade import Ledger
from worker.ledger.model import (
    PAGE,
    PAYLOAD_KEPT,
    BatchSummary,
    Debit,
    Order,
    Source,
    Transition,
    TransitionOutcome,
    new_batch_id,
    new_trade_no,
)

__all__ = [
    "PAGE",
    "PAYLOAD_KEPT",
    "BatchSummary",
    "Debit",
    "Ledger",
    "Order",
    "Source",
    "Transition",
    "TransitionOutcome",
    "new_batch_id",
    "new_trade_no",
]
