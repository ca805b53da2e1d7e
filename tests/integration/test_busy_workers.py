"""A big batch against a slow provider keeps every worker process busy submitting: the
reconcile passes still start on time (issue 23 item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import worker
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_for
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import State

pytestmark = pytest.mark.integration

# What the worker logs for a pass that ran (worker.flows.reconcile.PassReport); a pass
# that found another one running, or one moments before, says "reconcile pass not run".
PASS_RAN = "reconcile pass:"


def passes_logged(log: Path) -> int:
    return log.read_text(errors="replace").count(PASS_RAN) if log.exists() else 0


def test_reconcile_passes_run_while_a_big_batch_is_submitted(cluster_factory: Any) -> None:
    # Every POST answered in 0.25 s, 100/s allowed: 2,000 payouts are 20 s of work for
    # the two worker processes, ten pass intervals. One POST at a time, a submit task
    # of 100 payouts took 25 s, and a pass waited for one to end.
    env = {"VEXORA_RATE_LIMIT": "100/s", "RECONCILE_EVERY": "2", "RECONCILE_AFTER": "1"}
    sandbox = fast_sandbox(latency=0.25)
    with cluster_factory(env=env, sandbox=sandbox, workers=1, concurrency=2, web=False) as cluster:
        ledger = runtime.ledger()
        result = worker.enqueue_batch("ID", sample_rows("ID", 2000))
        assert result.rejected == []
        wait_for(
            "the batch's first payouts sent",
            lambda: ledger.state_counts().get(State.QUEUED, 0) < 2000,
            interval=0.05,
        )
        log = cluster.log_dir / "worker0.log"
        before = passes_logged(log)
        wait_for(
            "a reconcile pass while the batch is submitted",
            lambda: passes_logged(log) > before,
            timeout=15,  # seven pass intervals: a pass no longer waits for a 25 s task
            interval=0.1,
            seen=lambda: ledger.state_counts(),
        )
        queued = ledger.state_counts().get(State.QUEUED, 0)
        assert queued > 0, "the batch was done before a pass ran"
        assert runtime.publisher().submit_queue_length() > 0
