"""Payouts whose POST failed in a way that leaves the provider's record in doubt, end to
end: real Redis, real celery worker and beat processes, the sandbox over HTTP with its
webhooks off, so only lookups and resubmissions can settle them.

- A POST answered HTTP 500 before the provider stored it, whose status query then
  answers an undocumented code: resubmitted with the same tradeNo after the grace
  period, and paid once (issue 11, item 2).
- A POST stored and paid but answered HTTP 500, whose resubmission is refused with a
  top-level 8000: SUCCEEDED as the provider says, never FAILED (issue 11, item 3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import worker
from tests import ledger_reads
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_for, wait_settled
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.ledger import Order
from worker.provider.answers import CODE_ORDER_NOT_FOUND, CODE_REQUEST_FAILED

pytestmark = pytest.mark.integration

# Reconcile every 2 s whatever is pending for 1 s. "No record" must hold NO_RECORD_GRACE
# before a resubmission so that a POST still in flight can land first (30 s by default,
# for a slow provider): this sandbox answers every POST at once (no hangs, no latency),
# so none is in flight after 5 s.
GRACE = 5.0
FAST = {
    "RECONCILE_EVERY": "2",
    "RECONCILE_AFTER": "1",
    "NO_RECORD_GRACE": str(GRACE),
    "VEXORA_RATE_LIMIT": "200/s",
    "DETAILS_RATE_LIMIT": "200/s",
}
UNDOCUMENTED = "9001"  # what the sandbox answers a query for a tradeNo it never stored
assert UNDOCUMENTED != CODE_ORDER_NOT_FOUND


def enqueue(per_market: int) -> list[str]:
    batch_ids = []
    for market in ("ID", "KH"):
        result = worker.enqueue_batch(market, sample_rows(market, per_market))
        assert result.rejected == [] and result.batch_id is not None
        batch_ids.append(result.batch_id)
    return batch_ids


def orders_of(batch_ids: list[str]) -> list[Order]:
    ledger = runtime.ledger()
    found = [o for b in batch_ids for page in ledger.iter_batch(b) for o in ledger.get_many(page)]
    assert all(o is not None for o in found)
    return [o for o in found if o is not None]


def all_in(batch_ids: list[str], state: State, total: int) -> Callable[[], bool]:
    def check() -> bool:
        summaries = [runtime.ledger().batch(b) for b in batch_ids]
        return sum(s.counts.get(state, 0) for s in summaries if s is not None) == total

    return check


def notes(order: Order) -> list[str]:
    return [entry for _, entry in ledger_reads.history(runtime.ledger(), order.trade_no)]


def test_payouts_the_provider_never_stored_are_resubmitted_after_the_grace_period(
    cluster_factory: Any,
) -> None:
    sandbox = fast_sandbox(
        webhooks=False,
        failure_ratio=0.0,
        error_ratio=1.0,
        error_after_record_share=0.0,  # every 500 comes before the payout is stored
        not_found_code=UNDOCUMENTED,
    )
    # The provider's code for "no such order" is a setting (issue 21.6): this one's is
    # undocumented, so the deployment names it.
    env = {**FAST, "NOT_FOUND_CODES": UNDOCUMENTED}
    with cluster_factory(env=env, sandbox=sandbox, web=False) as cluster:
        batch_ids = enqueue(10)
        wait_for("every first POST failed", all_in(batch_ids, State.UNKNOWN, 20), 60)
        cluster.sandbox.configure(error_ratio=0.0)  # the resubmissions go through
        wait_settled(runtime.ledger(), batch_ids, timeout=120)  # not a day (REVIEW_AFTER)

        orders = orders_of(batch_ids)
        paid = cluster.sandbox.payouts()
        assert {o.trade_no for o in orders} == set(paid)
        for order in orders:
            record = paid[order.trade_no]
            assert order.state is State.SUCCEEDED, (order, notes(order))
            assert order.platform_trade_no == record["platFormTradeNo"]
            # The same tradeNo, sent twice: the first never stored, the second paid once.
            assert (record["post_count"], record["accepted_count"]) == (2, 1)
            assert order.resubmits == 1
            assert (
                sum(n.startswith("QUEUED lookup provider has no record") for n in notes(order)) == 1
            )
        stats = cluster.sandbox.stats()
        assert stats["errors_before_record"] == 20 and stats["errors_after_record"] == 0
        # At least two answers without a record per order, the grace period apart.
        assert stats["query_not_found"] >= 40
        assert stats["duplicate_payments"] == 0


def test_a_paid_payout_whose_resubmission_is_refused_8000_ends_succeeded(
    cluster_factory: Any,
) -> None:
    sandbox = fast_sandbox(
        webhooks=False,
        failure_ratio=0.0,
        error_ratio=1.0,
        error_after_record_share=1.0,  # stored (and paid), then HTTP 500
        repeat_code=CODE_REQUEST_FAILED,  # a repeated tradeNo is refused with 8000
        query_lag=3600.0,  # the status query does not show the payouts (yet)
    )
    with cluster_factory(env=FAST, sandbox=sandbox, web=False) as cluster:
        batch_ids = enqueue(8)
        provider = cluster.sandbox

        def every_payout_posted_twice() -> bool:
            paid = provider.payouts()
            return len(paid) == 16 and all(p["post_count"] == 2 for p in paid.values())

        # Two lookups NO_RECORD_GRACE apart showed no record: resubmitted, refused 8000.
        wait_for("resubmissions", every_payout_posted_twice, 60 + 2 * GRACE)
        assert provider.stats()["succeeded"] == 16  # paid, every one, by the first POST
        provider.configure(query_lag=0.0)  # now the query shows them
        wait_settled(runtime.ledger(), batch_ids, timeout=60)

        orders = orders_of(batch_ids)
        paid = provider.payouts()
        for order in orders:
            record = paid[order.trade_no]
            assert order.state is State.SUCCEEDED, (order, notes(order))
            assert order.platform_trade_no == record["platFormTradeNo"]
            assert (record["post_count"], record["accepted_count"]) == (2, 1)
            assert order.attempts == 2
            assert "UNKNOWN submit rejected 8000 on a repeat attempt" in notes(order)
        stats = provider.stats()
        assert stats["repeated_trade_no_posts"] == 16
        assert stats["duplicate_payments"] == 0
