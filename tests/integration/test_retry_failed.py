"""Retry what failed, end to end: a batch settles through real workers and the sandbox,
its failures are enqueued again (twice asked, once done), the retries settle, and past
FAILED_PAYLOAD_RETENTION the beat's reconcile pass leaves no personal number behind."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import worker
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_erased, wait_settled
from tests.unit import ledger_sql
from tests.unit.ledger_sql import PERSONAL_NUMBERS, numbers_in_the_database
from worker.celery import runtime
from worker.core.config import get_settings
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.ledger import Order

pytestmark = pytest.mark.integration

HOUR = 3600


def orders_of(batch_id: str) -> list[Order]:
    ledger = runtime.ledger()
    return [o for page in ledger.iter_batch(batch_id) for o in ledger.get_many(page) if o]


def test_failed_payouts_are_retried_once_each_and_nobody_is_paid_twice(
    cluster_factory: Any,
) -> None:
    env = {"FAILED_PAYLOAD_RETENTION": f"{HOUR}"}
    with cluster_factory(env=env, sandbox=fast_sandbox(failure_ratio=0.5)) as cluster:
        ledger = runtime.ledger()
        rows = sample_rows("ID", 40)
        first = worker.enqueue_batch("ID", rows)
        assert first.batch_id is not None
        wait_settled(ledger, [first.batch_id], timeout=120)
        failed = {o.trade_no for o in orders_of(first.batch_id) if o.state is State.FAILED}
        assert 5 <= len(failed) <= 35  # both outcomes exercised

        retried = worker.retry(first.batch_id)
        again = worker.retry(first.batch_id)  # a second operator, a repeated command
        assert retried.batch_id is not None and set(retried.retries) == failed
        assert again.batch_id is None and set(again.not_retried) == failed
        wait_settled(ledger, [retried.batch_id], timeout=120)

        batches = [first.batch_id, retried.batch_id]
        orders = [o for b in batches for o in orders_of(b)]
        paid = cluster.sandbox.payouts()
        assert {o.trade_no for o in orders} == set(paid)  # every one sent, none more
        assert all(record["accepted_count"] == 1 for record in paid.values())
        assert cluster.sandbox.stats()["duplicate_payments"] == 0
        # One payout per reference at most, whichever attempt paid it.
        succeeded = Counter(
            str(o.reference).split("#")[0] for o in orders if o.state is State.SUCCEEDED
        )
        assert max(succeeded.values()) == 1
        assert {o.retry_of for o in orders_of(retried.batch_id)} == failed

        # Past the window (its orders made an hour older), the beat's pass erases the rest.
        assert any(o.state is State.FAILED for o in orders_of(retried.batch_id))
        for order in orders:
            ledger_sql.backdate(ledger, order.trade_no, 2 * HOUR)
        wait_erased(ledger, timeout=60)
        numbers = {row[name] for row in rows for name in PERSONAL_NUMBERS if name in row}
        assert numbers_in_the_database(get_settings().database_url, numbers) == []
