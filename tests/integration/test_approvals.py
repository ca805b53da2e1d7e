"""A policy file on a real cluster (workers, beat, the sandbox): a batch over the band
waits for two people and nothing is sent before, then settles; a scheduled batch is
released by the beat once due, and nothing of it is sent before its time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import worker
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_for, wait_settled
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import State

pytestmark = pytest.mark.integration

POLICY = """
[markets.ID]
max_payout = "50000000"
approvals = [
  { total_over = "0", approvals = 1 },
  { total_over = "500000000", payout_over = "20000000", approvals = 2 },
]
"""


def rows(count: int, start: int, amount: str) -> list[dict[str, Any]]:
    found = sample_rows("ID", count, start=start)
    for i, row in enumerate(found):
        row["amount"] = amount
        row["bankAccountNo"] = f"{start + i:013d}"
    return found


def first_claim(batch_id: str) -> datetime | None:
    with runtime.ledger().pool.connection() as conn:
        row = conn.execute(
            "SELECT min(e.at) FROM order_events e JOIN orders o USING (trade_no) "
            "WHERE o.batch_id = %s AND e.to_state = 'SUBMITTING'",
            (batch_id,),
        ).fetchone()
    return row[0] if row else None


def test_two_people_release_a_batch_and_the_beat_a_scheduled_one(
    cluster_factory: Any, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {"DISBURSE_POLICY": str(policy)}
    with cluster_factory(env=env, sandbox=fast_sandbox()) as cluster:
        big = worker.enqueue_batch("ID", rows(20, 0, "25000000"), operator="carol")
        assert big.batch_id is not None and big.held_reason == "needs 2 approvals, none given yet"
        with pytest.raises(worker.ApprovalRefused):
            worker.approve(big.batch_id, operator="carol")
        first = worker.approve(big.batch_id, operator="alice")
        assert first.moved == 0 and first.approvals_remaining == 1
        time.sleep(2)  # time enough for the workers (and the beat) to send, which they must not
        assert cluster.sandbox.stats()["payout_requests"] == 0
        assert worker.approve(big.batch_id, operator="bob").moved == 20
        wait_settled(runtime.ledger(), [big.batch_id], timeout=60)
        assert len(cluster.sandbox.payouts()) == 20

        at = datetime.now(UTC) + timedelta(seconds=3)
        later = worker.enqueue_batch("ID", rows(5, 100, "100000"), operator="carol", not_before=at)
        assert later.batch_id is not None
        held = worker.approve(later.batch_id, operator="alice")
        assert held.moved == 0 and held.held == f"scheduled for {at.isoformat()}"

        def released() -> bool:
            summary = worker.batch_summary(later.batch_id or "")
            return summary is not None and not summary.counts.get(State.HELD)

        wait_for("the beat releases the scheduled batch", released, timeout=40, interval=0.5)
        wait_settled(runtime.ledger(), [later.batch_id], timeout=60)
        claimed = first_claim(later.batch_id)
        assert claimed is not None and claimed >= at
        assert len(cluster.sandbox.payouts()) == 25
        actions = [(e.who, e.action) for e in worker.audit(batch_id=big.batch_id)]
        assert actions == [("carol", "enqueue"), ("alice", "approve"), ("bob", "approve")]
