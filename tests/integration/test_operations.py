"""Operating it, end to end with real workers and the sandbox: hold and approve, the
balance check, cancel, pause and resume, and what never reaches logs or the broker."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest

import worker
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_for, wait_settled
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import State

pytestmark = pytest.mark.integration


def sent(cluster: Any) -> int:
    return int(cluster.sandbox.stats()["payout_requests"])


def test_held_batch_moves_only_after_approval(cluster_factory: Any) -> None:
    with cluster_factory(sandbox=fast_sandbox()) as cluster:
        result = worker.enqueue_batch("ID", sample_rows("ID", 40), hold=True)
        assert result.batch_id is not None
        time.sleep(2)  # time enough for the workers to send, which they must not
        assert cluster.sandbox.stats()["payout_requests"] == 0
        summary = worker.batch_summary(result.batch_id)
        assert summary is not None and summary.counts == {State.HELD: 40}
        approved = worker.approve(result.batch_id)
        assert approved.moved == 40
        wait_settled(runtime.ledger(), [result.batch_id], timeout=60)
        assert len(cluster.sandbox.payouts()) == 40


def test_batch_the_balance_cannot_cover_stays_held(cluster_factory: Any) -> None:
    with cluster_factory(sandbox=fast_sandbox(balance="50000")) as cluster:
        result = worker.enqueue_batch("ID", sample_rows("ID", 10), hold=True)
        assert result.batch_id is not None
        outcome = worker.approve(result.batch_id)
        assert outcome.moved == 0 and "does not cover" in outcome.message
        summary = worker.batch_summary(result.batch_id)
        assert summary is not None
        assert summary.counts == {State.HELD: 10}
        assert summary.held_reason and "balance 50000" in summary.held_reason
        assert cluster.sandbox.stats()["payout_requests"] == 0


def test_cancel_stops_what_is_unsent(cluster_factory: Any) -> None:
    with cluster_factory(sandbox=fast_sandbox()) as cluster:
        held = worker.enqueue_batch("AR", sample_rows("AR", 25), hold=True)
        assert held.batch_id is not None
        assert runtime.batch_controls().cancel(held.batch_id).moved == 25
        summary = worker.batch_summary(held.batch_id)
        assert summary is not None and summary.counts == {State.CANCELLED: 25}
        assert worker.approve(held.batch_id).moved == 0
        time.sleep(1)  # time enough for a worker to send one, which it must not
        assert cluster.sandbox.stats()["payout_requests"] == 0


def test_pause_stops_every_worker_within_a_second_and_resume_loses_nothing(
    cluster_factory: Any,
) -> None:
    env = {"VEXORA_RATE_LIMIT": "20/s"}
    with cluster_factory(env=env, sandbox=fast_sandbox(failure_ratio=0)) as cluster:
        result = worker.enqueue_batch("JP", sample_rows("JP", 200))  # 10 s at 20/s
        assert result.batch_id is not None
        wait_for("20 payouts sent", lambda: sent(cluster) >= 20, timeout=30, interval=0.05)
        runtime.pause_switch().pause("test")
        time.sleep(1.0)
        sent_after_a_second = cluster.sandbox.stats()["payout_requests"]
        time.sleep(3.0)
        assert cluster.sandbox.stats()["payout_requests"] == sent_after_a_second
        assert sent_after_a_second < 200
        from worker import cli

        assert cli.run(["resume"]) == 0
        wait_settled(runtime.ledger(), [result.batch_id], timeout=90)
        payouts = cluster.sandbox.payouts()
        assert len(payouts) == 200
        assert all(p["accepted_count"] == 1 for p in payouts.values())


def test_a_pause_held_across_a_redis_wipe_then_cancel_pays_nothing_cancelled(
    cluster_factory: Any,
) -> None:
    """The incident routine (issue 21 items 4 and 8): pause mid-batch, Redis wiped while
    paused, cancel, resume. Nothing is sent while paused, and no payout the provider
    received is told CANCELLED."""
    env = {"VEXORA_RATE_LIMIT": "20/s"}
    with cluster_factory(env=env, sandbox=fast_sandbox(failure_ratio=0)) as cluster:
        result = worker.enqueue_batch("JP", sample_rows("JP", 200))  # 10 s at 20/s
        assert result.batch_id is not None
        wait_for("20 payouts sent", lambda: sent(cluster) >= 20, timeout=30, interval=0.05)
        assert worker.pause("incident", operator="ops").already is None
        runtime.redis_client().flushall()  # the pause is PostgreSQL's: the wipe keeps it
        time.sleep(1.0)
        sent_after_a_second = cluster.sandbox.stats()["payout_requests"]
        time.sleep(3.0)
        assert cluster.sandbox.stats()["payout_requests"] == sent_after_a_second
        cancelled = worker.cancel(result.batch_id)
        assert 0 < cancelled.moved < 200
        assert worker.pause("again").already is not None  # the first reason stays
        resumed = worker.resume(operator="ops")
        assert resumed.records["all"].who == "ops"
        wait_settled(runtime.ledger(), [result.batch_id], timeout=90)
        summary = worker.batch_summary(result.batch_id)
        assert summary is not None and summary.counts[State.CANCELLED] == cancelled.moved
        received = cluster.sandbox.payouts()
        orders = runtime.ledger().get_many(list(received))
        assert all(o is not None and o.state is not State.CANCELLED for o in orders)
        assert len(received) == 200 - cancelled.moved
        assert all(p["accepted_count"] == 1 for p in received.values())


def test_secrets_and_personal_data_stay_out_of_logs_and_broker(cluster_factory: Any) -> None:
    secrets = {
        "VEXORA_APP_SECRET": "app-S3CRET-zq81",
        "DETAILS_CLIENT_SECRET": "client-S3CRET-zq82",
    }
    sandbox = fast_sandbox(
        app_secret=secrets["VEXORA_APP_SECRET"],
        client_secret=secrets["DETAILS_CLIENT_SECRET"],
        drop_webhook_ratio=0.5,  # so reconciliation (and the OAuth token) is used too
    )
    env = {**secrets, "RECONCILE_AFTER": "1", "RECONCILE_EVERY": "2"}
    rows = sample_rows("ID", 60)
    with cluster_factory(env=env, sandbox=sandbox, workers=0, beat=False) as cluster:
        result = worker.enqueue_batch("ID", rows)
        messages = runtime.redis_client().lrange("submit", 0, -1)
        assert messages, "expected the submit messages to be waiting in the broker"
        decoded = []
        for message in messages:
            args, kwargs, _ = json.loads(base64.b64decode(json.loads(message)["body"]))
            assert kwargs == {}
            (trade_nos,) = args  # the only argument: a list of tradeNos
            assert all(re.fullmatch("[0-9a-f]{32}", t) for t in trade_nos)
            decoded.append(f"{message}\n{args}")
        broker_text = "\n".join(decoded)
        for row in rows:
            for field in ("bankAccountNo", "mobile", "customerName", "email"):
                assert row[field] not in broker_text
        cluster.worker_count = 2
        cluster.workers = [None, None]
        cluster.start_worker(0)
        cluster.start_worker(1)
        cluster.start_beat()
        assert result.batch_id is not None
        wait_settled(runtime.ledger(), [result.batch_id], timeout=90)
        assert cluster.sandbox.stats()["tokens_issued"] >= 1
        logs = "\n".join(p.read_text(errors="replace") for p in cluster.log_dir.glob("*.log"))
        assert logs
        for secret in secrets.values():
            assert secret not in logs
        for row in rows:
            assert row["bankAccountNo"] not in logs
            assert row["mobile"] not in logs
