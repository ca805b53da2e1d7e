"""The outbox on the session's ledger database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.ledger import Ledger
from worker.outbox import Deliveries, Feed


@pytest.fixture
def deliveries(ledger: Ledger) -> Iterator[Deliveries]:
    """The outbox, starting after every event there is; its endpoint's breaker closed."""
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE outbox_state SET failures = 0, retry_at = NULL, "
            "position = (SELECT coalesce(max(id), 0) FROM order_events)"
        )
    yield Deliveries(ledger.pool, Feed(ledger.pool))
