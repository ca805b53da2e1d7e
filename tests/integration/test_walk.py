"""A reconcile pass walks the provider's paged list: real Redis and PostgreSQL, the
sandbox over HTTP with its webhooks off, and real celery workers for any lookup a pass
publishes. Each round makes a few hundred orders pending at the sandbox, settles them
there, and runs one pass (as ``disburse reconcile`` does); the sandbox counts the
requests it got."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.support.cluster import EXPECTED_STATE, SharedServers, fast_sandbox, running_cluster
from tests.support.waiting import wait_settled
from worker.celery import runtime
from worker.core import keys
from worker.dev.cluster import LocalCluster
from worker.dev.pending import make_pending
from worker.flows.reconcile import PassReport
from worker.provider.no_details import NoDetailsApi

pytestmark = pytest.mark.integration

ORDERS = 300  # 12 pages of 25
ENV = {
    "RECONCILE_EVERY": "1",
    "RECONCILE_AFTER": "1",
    "DETAILS_RATE_LIMIT": "200/s",
    "SWEEP_AFTER": "3600",
}


@pytest.fixture(scope="module")
def cluster(shared_servers: SharedServers) -> Iterator[LocalCluster]:
    sandbox = fast_sandbox(webhooks=False, failure_ratio=0.2)
    with running_cluster(
        shared_servers, workers=1, concurrency=2, beat=False, web=False, sandbox=sandbox, env=ENV
    ) as local:
        yield local


_rounds = [0]


Round = tuple[list[str], PassReport, dict[str, Any]]


def one_pass_over_new_pending(cluster: LocalCluster) -> Round:
    """ORDERS new orders pending at the sandbox, settled there and due here; then one
    reconcile pass: (their tradeNos, its report, the sandbox's counters it moved)."""
    _rounds[0] += 1
    _, trade_nos = make_pending(ORDERS, start=_rounds[0] * 10_000)
    cluster.sandbox.settle_now()
    time.sleep(1.2)  # RECONCILE_AFTER
    settings = runtime.get_settings()
    runtime.redis_client().delete(keys.reconcile(settings.key_prefix, "gate"))
    before = cluster.sandbox.stats()
    report = runtime.reconciler().run_pass()
    after = cluster.sandbox.stats()
    moved = {k: after[k] - before[k] for k in after if isinstance(after[k], int)}
    return trade_nos, report, moved


def assert_final_as_the_sandbox_settled(cluster: LocalCluster, trade_nos: list[str]) -> None:
    paid = cluster.sandbox.payouts()
    orders = runtime.ledger().get_many(trade_nos)
    for order in orders:
        assert order is not None
        assert order.state is EXPECTED_STATE[paid[order.trade_no]["status"]], order
        # What the row said the payout cost is recorded, as a lookup records it.
        assert order.fee == Decimal(cluster.sandbox.config.fee), order
        assert order.total_debited == order.amount + order.fee, order


def test_300_pending_orders_settle_in_12_list_requests_and_no_lookup(
    cluster: LocalCluster,
) -> None:
    trade_nos, report, moved = one_pass_over_new_pending(cluster)
    assert report.walk is not None and report.walk.finished, report
    assert sorted(report.walk.matched) == sorted(trade_nos)
    assert moved["list_requests"] == 12
    assert moved["details_lookups"] == 0 and moved["query_requests"] == 0
    assert report.lookups == 0  # nothing left for single lookups
    assert_final_as_the_sandbox_settled(cluster, trade_nos)


def test_payouts_arriving_during_the_walk_cost_re_reads_never_a_missed_order(
    cluster: LocalCluster,
) -> None:
    cluster.sandbox.configure(list_arrivals=5)  # before every page: rows shift down by 5
    try:
        trade_nos, report, moved = one_pass_over_new_pending(cluster)
    finally:
        cluster.sandbox.configure(list_arrivals=0)
    assert moved["list_arrivals"] == 5 * moved["list_requests"]
    assert report.walk is not None and sorted(report.walk.matched) == sorted(trade_nos)
    # 20 new rows a page: 15 pages; not one order left for a single lookup.
    assert moved["list_requests"] == 15
    assert moved["details_lookups"] == 0 and moved["query_requests"] == 0
    assert report.lookups == 0
    assert_final_as_the_sandbox_settled(cluster, trade_nos)


def test_a_401_mid_walk_refreshes_the_token_once_and_reads_the_same_page_again(
    cluster: LocalCluster,
) -> None:
    # A token cached before the pass, whichever tests of this module ran first here (the
    # run shares them out among its processes): the pass's only fetch is the refresh.
    client = runtime.details()
    assert not isinstance(client, NoDetailsApi)
    client.tokens.get()
    fifth = cluster.sandbox.stats()["list_requests"] + 5
    cluster.sandbox.configure(revoke_tokens_at_list_request=fifth)
    try:
        trade_nos, report, moved = one_pass_over_new_pending(cluster)
    finally:
        cluster.sandbox.configure(revoke_tokens_at_list_request=None)
    assert moved["details_unauthorized"] == 1
    assert moved["tokens_issued"] == 1  # one refresh
    assert moved["list_requests"] == 13  # the 12 pages, page 5 twice
    assert report.walk is not None and report.walk.finished
    assert sorted(report.walk.matched) == sorted(trade_nos)
    assert moved["details_lookups"] == 0 and moved["query_requests"] == 0
    assert_final_as_the_sandbox_settled(cluster, trade_nos)


def test_two_beats_never_ask_for_the_same_page(cluster: LocalCluster) -> None:
    # Last in this module: the beats run on until the cluster stops.
    _rounds[0] += 1
    batch_id, trade_nos = make_pending(ORDERS, start=_rounds[0] * 10_000)
    cluster.sandbox.settle_now()
    time.sleep(1.2)  # RECONCILE_AFTER
    before = cluster.sandbox.stats()
    cluster.start_beat()
    cluster.start_beat()  # a second beat, started by mistake
    wait_settled(runtime.ledger(), [batch_id], timeout=90)
    time.sleep(3)  # a few more passes of both beats: nothing left to ask about
    after = cluster.sandbox.stats()
    assert after["list_requests"] - before["list_requests"] == 12  # each page once
    assert after["details_lookups"] == before["details_lookups"]
    assert after["query_requests"] == before["query_requests"]
    assert all(beat.poll() is None for beat in cluster.beats) and len(cluster.beats) == 2
    assert_final_as_the_sandbox_settled(cluster, trade_nos)
