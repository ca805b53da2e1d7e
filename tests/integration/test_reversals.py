"""Reversals end to end: real Redis and PostgreSQL, the sandbox over HTTP with webhooks to
the real web process, real celery worker and beat processes. A payout the sandbox
reverses after paying it ends REVERSED on the details API's word; a forged failure
webhook for a paid payout, which the details API contradicts, moves nothing."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import requests

import worker
from tests import ledger_reads
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_for, wait_settled
from tests.unit.ledger_sql import PERSONAL_NUMBERS, numbers_in_the_database
from worker.celery import runtime
from worker.core.config import get_settings
from worker.core.samples import sample_rows
from worker.core.signing import sign
from worker.core.states import State
from worker.flows import report
from worker.ledger import Order

pytestmark = pytest.mark.integration

FAST = {"RECONCILE_EVERY": "2", "RECONCILE_AFTER": "1"}


def order(trade_no: str) -> Order:
    found = runtime.ledger().get(trade_no)
    assert found is not None
    return found


def checked_by_details(found: Order) -> bool:
    """The details API was asked (only its answer records a fee) and the mark cleared."""
    return found.fee is not None and found.recheck_ms is None


def test_a_reversed_payout_ends_reversed_and_a_forged_failure_moves_nothing(
    cluster_factory: Any,
) -> None:
    sandbox = fast_sandbox(failure_ratio=0.0)
    with cluster_factory(env=FAST, sandbox=sandbox, workers=1, concurrency=2) as cluster:
        enqueued = worker.enqueue_batch("ID", sample_rows("ID", 4))
        assert enqueued.rejected == [] and enqueued.batch_id is not None
        batch_id = enqueued.batch_id
        ledger = runtime.ledger()
        wait_settled(ledger, [batch_id], timeout=60)
        bounced, forged, *paid = (t for page in ledger.iter_batch(batch_id) for t in page)
        assert {order(t).state for t in (bounced, forged, *paid)} == {State.SUCCEEDED}

        # The provider reverses a paid payout: its details API says failed, and a webhook.
        answer = requests.post(
            cluster.sandbox.url + "/_sandbox/reverse", json={"tradeNo": bounced}, timeout=5
        )
        assert answer.status_code == 200, answer.text
        # A validly signed notification saying a paid payout failed, which it did not.
        body = {
            "platFormTradeNo": order(forged).platform_trade_no,
            "tradeNo": forged,
            "amount": str(order(forged).amount),
            "status": "00029",
            "message": "REJECTED_TRANSACTION",
            "timestamp": str(int(time.time() * 1000)),
        }
        body["sign"] = sign(body, get_settings().vexora_app_secret)
        told = requests.post(cluster.receiver_url, json=body, timeout=10)
        assert (told.status_code, told.text) == (200, "OK")
        # Recorded (and marked for the details API): the webhook alone moves nothing.
        after_forgery = order(forged)
        assert (after_forgery.state, after_forgery.discrepancy) == (
            State.SUCCEEDED,
            "FAILED webhook",
        )

        wait_for("the reversal confirmed", lambda: order(bounced).state is State.REVERSED)
        wait_for("the forged failure checked", lambda: checked_by_details(order(forged)))

        reversed_order, checked = order(bounced), order(forged)
        assert checked.state is State.SUCCEEDED and checked.discrepancy == "FAILED webhook"
        assert checked.recheck_ms is None and ledger.rechecks() == []
        assert reversed_order.reason == "the details API says it failed after success"
        # The confirming lookups recorded what each payout cost (the sandbox: 2000 IDR).
        for found in (reversed_order, checked):
            assert (found.fee, found.fee_currency) == (Decimal("2000.00"), "IDR")
            assert found.total_debited == found.amount + Decimal("2000.00")
        history = ledger_reads.history(ledger, bounced)
        assert history[-1][1].startswith("REVERSED lookup")
        assert any(h.startswith("DISCREPANCY FAILED webhook") for _, h in history)
        assert [h for _, h in ledger_reads.history(ledger, forged)][
            -1
        ] == "DISCREPANCY FAILED webhook"
        assert all(order(t).state is State.SUCCEEDED for t in paid)

        summary = ledger.batch(batch_id)
        assert summary is not None
        assert summary.counts == {State.SUCCEEDED: 3, State.REVERSED: 1}
        assert summary.fees == {
            State.SUCCEEDED: {"IDR": Decimal("2000.00")},
            State.REVERSED: {"IDR": Decimal("2000.00")},
        }
        assert report.status_dict(ledger, summary, details=False)["counts"]["REVERSED"] == 1
        assert cluster.sandbox.stats()["duplicate_payments"] == 0

        # Paid, then reversed, with the default FAILED_PAYLOAD_RETENTION: no payout kept its
        # account number, so a retry cannot send the reversed one again and says why.
        numbers = {row[n] for row in sample_rows("ID", 4) for n in PERSONAL_NUMBERS if n in row}
        assert numbers_in_the_database(get_settings().database_url, numbers) == []
        retried = worker.retry(batch_id)
        assert retried.batch_id is None and retried.erased == [bounced]
        assert retried.not_retried == {
            bounced: "its fields were erased when it succeeded; "
            "enqueue it again from your records under a new reference"
        }
