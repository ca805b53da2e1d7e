"""The outbox's table: what is claimed for sending (each payout's oldest pending event,
due, leased while in flight), and when a failed attempt is tried again."""

from __future__ import annotations

import pytest

from tests.unit.outbox.support import new_order, rows, walk
from worker.core.states import State
from worker.ledger import Ledger
from worker.outbox import Deliveries
from worker.outbox.deliveries import Attempt


@pytest.fixture
def taken(ledger: Ledger, deliveries: Deliveries) -> dict[str, list[int]]:
    """Three payouts' events taken into the outbox: trade_no -> event ids, oldest first."""
    orders = [new_order(ledger) for _ in range(3)]
    for trade_no in orders:
        walk(ledger, trade_no, State.SUBMITTING, State.PROCESSING, State.SUCCEEDED)
    with deliveries.pool.connection() as conn:
        conn.autocommit = True
        assert deliveries.take(conn, wait=5.0) == 9
    found: dict[str, list[int]] = {}
    for trade_no, event_id in rows(
        ledger, "SELECT trade_no, event_id FROM outbox_deliveries ORDER BY event_id"
    ):
        found.setdefault(trade_no, []).append(event_id)
    return found


def test_each_payout_s_oldest_pending_event_is_claimed_and_leased(
    deliveries: Deliveries, taken: dict[str, list[int]]
) -> None:
    with deliveries.pool.connection() as conn:
        conn.autocommit = True
        claimed = deliveries.claim(conn, 10, lease=60.0)
        assert [d.event_id for d in claimed] == sorted(ids[0] for ids in taken.values())
        # In flight: neither sent again nor passed by its payout's later events.
        assert deliveries.claim(conn, 10, lease=60.0) == []
        first, *_ = claimed
        deliveries.record(conn, [Attempt(first.event_id, 1, 200, 5, None)])
        (after,) = deliveries.claim(conn, 10, lease=60.0)
    trade_no = next(t for t, ids in taken.items() if ids[0] == first.event_id)
    assert after.event_id == taken[trade_no][1]


def test_a_claim_takes_at_most_the_room_oldest_first(
    deliveries: Deliveries, taken: dict[str, list[int]]
) -> None:
    with deliveries.pool.connection() as conn:
        conn.autocommit = True
        (oldest,) = deliveries.claim(conn, 1, lease=60.0)
    assert oldest.event_id == min(ids[0] for ids in taken.values())


@pytest.mark.parametrize(
    ("latency_ms", "due_within"),
    [
        (5, (0.9, 2.0)),  # refused at once: its first backoff, 1-2 s
        (10_000, (-1.0, 0.0)),  # no answer in 10 s: that wait was longer than the backoff
    ],
)
def test_a_failed_attempt_is_tried_again_after_its_backoff_from_when_it_was_sent(
    ledger: Ledger,
    deliveries: Deliveries,
    taken: dict[str, list[int]],
    latency_ms: int,
    due_within: tuple[float, float],
) -> None:
    event_id = next(iter(taken.values()))[0]
    status = 500 if latency_ms < 1000 else None
    with deliveries.pool.connection() as conn:
        conn.autocommit = True
        (state,) = deliveries.record(conn, [Attempt(event_id, 1, status, latency_ms, "failed")])
    assert state == "pending"
    ((due_in,),) = rows(
        ledger,
        "SELECT extract(epoch FROM next_at - now()) FROM outbox_deliveries WHERE event_id = %s",
        event_id,
    )
    assert due_within[0] <= due_in <= due_within[1]
