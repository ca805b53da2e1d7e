"""Reconciliation end to end: real Redis, the sandbox over HTTP, real celery worker and
beat processes. With the sandbox's webhooks off, every payout reaches its final state
through the reconcile beat and the details / query APIs alone."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import fakeredis
import pytest

import worker
from tests import ledger_reads
from tests.support.cluster import EXPECTED_STATE, fast_sandbox
from tests.support.details import every_row
from tests.support.waiting import wait_settled
from worker.celery import runtime
from worker.core.config import get_settings
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.cluster import LocalCluster
from worker.dev.credentials import sandbox_settings
from worker.ledger import Order, new_batch_id, new_trade_no
from worker.provider.answers import STATUS_PROCESSING
from worker.provider.details import DetailsClient
from worker.provider.token import TokenCache, TokenFetcher
from worker.provider.vexora import VexoraClient
from worker.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.integration

# Reconcile every 2 s anything pending for 1 s; submissions fast enough not to matter.
# These tests count single lookups: the list walk (tests/integration/test_walk.py) is off.
FAST = {
    "RECONCILE_EVERY": "2",
    "RECONCILE_AFTER": "1",
    "VEXORA_RATE_LIMIT": "200/s",
    "DETAILS_RATE_LIMIT": "200/s",
    "RECONCILE_WALK_AT": "0",
}


class LookupLog:
    """Every lookup the sandbox answered (details by platform id, query by tradeNo), with
    the payout's status at that moment: recorded inside the in-process sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.entries: list[tuple[float, str, str]] = []  # (monotonic, tradeNo, status)
        self._lock = threading.Lock()
        state = sandbox.state
        for name in ("get", "get_by_platform"):
            setattr(state, name, self._recording(getattr(state, name)))

    def _recording(self, method: Any) -> Any:
        def wrapped(key: str) -> Any:
            payout = method(key)
            if payout is not None:
                with self._lock:
                    self.entries.append((time.monotonic(), payout.trade_no, payout.status))
            return payout

        return wrapped

    def after_settlement(self) -> Counter[str]:
        """Lookups per tradeNo that found the payout already settled."""
        with self._lock:
            return Counter(t for _, t, status in self.entries if status != STATUS_PROCESSING)

    def span(self) -> float:
        with self._lock:
            times = [when for when, _, _ in self.entries]
        return max(times) - min(times) if times else 0.0


def enqueue(markets: tuple[str, ...], per_market: int) -> list[str]:
    batch_ids = []
    for market in markets:
        result = worker.enqueue_batch(market, sample_rows(market, per_market))
        assert result.rejected == [] and result.batch_id is not None
        batch_ids.append(result.batch_id)
    return batch_ids


def orders_of(batch_ids: list[str]) -> list[Order]:
    ledger = runtime.ledger()
    found = [o for b in batch_ids for page in ledger.iter_batch(b) for o in ledger.get_many(page)]
    assert all(o is not None for o in found)
    return [o for o in found if o is not None]


def assert_final_as_the_sandbox_settled(cluster: LocalCluster, orders: list[Order]) -> None:
    paid = cluster.sandbox.payouts()
    assert {o.trade_no for o in orders} == set(paid)
    for order in orders:
        record = paid[order.trade_no]
        assert order.state == EXPECTED_STATE[record["status"]], (order, record)
        assert order.platform_trade_no == record["platFormTradeNo"]
        assert record["accepted_count"] == 1
    assert cluster.sandbox.stats()["duplicate_payments"] == 0


def assert_no_task_failed(cluster: LocalCluster) -> None:
    """No task (a reconcile pass, a lookup, a submit) raised in any worker."""
    for log in cluster.log_dir.glob("worker*.log"):
        failures = [
            line[:300]
            for line in log.read_text(errors="replace").splitlines()
            if "raised unexpected" in line
        ]
        assert failures == [], failures


def lose_messages(market: str, count: int) -> str:
    """Orders persisted whose submit messages never reach the broker: the sweeper's job."""
    from schemas import validate_row

    settings = get_settings()
    payouts = [
        validate_row(market, row, notify_url=settings.notify_url)
        for row in sample_rows(market, count, seed=99, start=50_000)
    ]
    batch_id = new_batch_id()
    created = runtime.ledger().create_orders(payouts, batch_id=batch_id, market=market)
    assert all(is_new for _, is_new in created)
    return batch_id


def test_webhooks_off_1000_payouts_end_final_through_reconciliation_with_one_token(
    cluster_factory: Any,
) -> None:
    sandbox = fast_sandbox(webhooks=False, failure_ratio=0.2, token_lifetime=3600)
    with cluster_factory(env=FAST, sandbox=sandbox, workers=4, concurrency=2, web=False) as cluster:
        lookups = LookupLog(cluster.sandbox)
        batch_ids = enqueue(("ID", "AR", "JP", "KH"), 250)
        wait_settled(runtime.ledger(), batch_ids, timeout=150)
        orders = orders_of(batch_ids)
        assert len(orders) == 1000
        assert_final_as_the_sandbox_settled(cluster, orders)
        stats = cluster.sandbox.stats()
        assert stats["webhooks_sent"] == 0  # reconciliation alone
        assert stats["details_lookups"] >= 1000
        # 4 worker processes (8 pool children), 1,000+ details calls: one token.
        assert stats["tokens_issued"] == 1
        # Every order was answered by its first lookup after it settled: none failed,
        # none was asked twice.
        assert set(lookups.after_settlement().values()) == {1}
        assert Counter(o.state for o in orders)[State.FAILED] > 100
        assert_no_task_failed(cluster)


def test_short_lived_tokens_are_refreshed_about_once_a_lifetime(cluster_factory: Any) -> None:
    # 900 lookups at 60/s: a ~15 s run of details calls with 3 s tokens.
    env = {**FAST, "DETAILS_RATE_LIMIT": "60/s"}
    sandbox = fast_sandbox(webhooks=False, token_lifetime=3)
    with cluster_factory(env=env, sandbox=sandbox, workers=4, concurrency=2, web=False) as cluster:
        lookups = LookupLog(cluster.sandbox)
        batch_ids = enqueue(("ID", "AR", "JP"), 300)
        wait_settled(runtime.ledger(), batch_ids, timeout=150)
        orders = orders_of(batch_ids)
        assert_final_as_the_sandbox_settled(cluster, orders)
        stats = cluster.sandbox.stats()
        span = lookups.span()
        assert span >= 10, span
        print(f"tokens issued: {stats['tokens_issued']} over {span:.1f} s of lookups")
        assert 3 <= stats["tokens_issued"] <= 8, (stats["tokens_issued"], span)
        # An expired token cost no lookup: each order was answered by one lookup.
        assert set(lookups.after_settlement().values()) == {1}
        assert stats["details_lookups"] >= len(orders)
        assert_no_task_failed(cluster)


def test_two_beats_never_look_an_order_up_twice_in_one_pass(cluster_factory: Any) -> None:
    env = {**FAST, "RECONCILE_AFTER": "2", "SWEEP_AFTER": "1"}
    sandbox = fast_sandbox(webhooks=False, settle_delay=(0.05, 0.3))
    with cluster_factory(env=env, sandbox=sandbox, web=False) as cluster:
        cluster.start_beat()  # a second beat, started by mistake
        lookups = LookupLog(cluster.sandbox)
        batch_ids = enqueue(("ID", "KH"), 200)
        batch_ids.append(lose_messages("ID", 20))  # the sweeper republishes these
        wait_settled(runtime.ledger(), batch_ids, timeout=120)
        orders = orders_of(batch_ids)
        assert_final_as_the_sandbox_settled(cluster, orders)
        # The orders settle long before they are due, so each is looked up exactly once:
        # twice would mean two passes (or one pass twice) sent the same order.
        per_order = lookups.after_settlement()
        assert set(per_order.values()) == {1}, per_order.most_common(3)
        stats = cluster.sandbox.stats()
        pending_answers = sum(1 for _, _, s in lookups.entries if s == STATUS_PROCESSING)
        assert stats["details_lookups"] + stats["query_requests"] == len(orders) + pending_answers
        assert all(beat.poll() is None for beat in cluster.beats) and len(cluster.beats) == 2
        # Swept messages may duplicate queued ones: the claim keeps it one POST each.
        assert all(p["post_count"] == 1 for p in cluster.sandbox.payouts().values())
        assert_no_task_failed(cluster)


def test_accepted_then_hung_payouts_end_as_the_sandbox_settled_paid_once(
    cluster_factory: Any,
) -> None:
    env = {**FAST, "HTTP_READ_TIMEOUT": "1"}
    sandbox = fast_sandbox(webhooks=False, hang_ratio=0.25, hang_seconds=2)
    with cluster_factory(env=env, sandbox=sandbox, web=False) as cluster:
        # Four batches: four submit messages worked in parallel, each waiting out its hangs.
        batch_ids = enqueue(("ID", "AR", "JP", "KH"), 30)
        wait_settled(runtime.ledger(), batch_ids, timeout=120)
        orders = orders_of(batch_ids)
        assert_final_as_the_sandbox_settled(cluster, orders)
        stats = cluster.sandbox.stats()
        assert stats["hangs"] >= 10
        paid = cluster.sandbox.payouts()
        # Sent once, never again: the hung ones were found by query, not resubmitted.
        assert all(record["post_count"] == 1 for record in paid.values())
        hung = [
            o
            for o in orders
            if any("UNKNOWN" in h for _, h in ledger_reads.history(runtime.ledger(), o.trade_no))
        ]
        assert len(hung) == stats["hangs"]
        assert_no_task_failed(cluster)


def sandbox_with_payouts(count: int) -> Any:
    """An in-process sandbox over HTTP holding ``count`` settled payouts."""
    from schemas import validate_row

    sandbox = Sandbox(SandboxConfig(webhooks=False, seed=3, settle_delay=(0.0, 0.0))).start()
    settings = sandbox_settings(sandbox.url)
    with VexoraClient.from_settings(settings, "ID") as client:
        for row in sample_rows("ID", count):
            payout = validate_row("ID", row, notify_url="https://disburse.example/notify")
            client.submit(payout.fields, new_trade_no())
    return sandbox, settings


@pytest.fixture(scope="module", params=[60, 50, 10], ids=["60-rows", "50-rows", "10-rows"])
def listing_sandbox(request: pytest.FixtureRequest) -> Any:
    sandbox, settings = sandbox_with_payouts(request.param)
    yield sandbox, settings, request.param
    sandbox.stop()


@pytest.mark.parametrize("style", ["pagination", "meta", "empty", "none"])
def test_list_follows_every_pagination_spelling(listing_sandbox: Any, style: str) -> None:
    sandbox, settings, count = listing_sandbox
    sandbox.configure(pagination_style=style)
    newest_first = [p["platFormTradeNo"] for p in reversed(sandbox.payouts().values())]
    before = sandbox.stats()["list_requests"]
    tokens = TokenCache(fakeredis.FakeRedis(), TokenFetcher.from_settings(settings))
    with DetailsClient.from_settings(settings, tokens) as client:
        listed = every_row(client)
    assert len(listed) == count
    assert [d.transaction_id for d in listed] == newest_first  # every row once, in order
    assert {d.status for d in listed} <= {"success", "failed"}
    requests = sandbox.stats()["list_requests"] - before
    if style in ("pagination", "meta"):
        assert requests == -(-count // 25)  # up to the last page the answer names
    else:
        # No last page named: on while pages are full. 60 = 25 + 25 + a short 10;
        # 50 = 25 + 25 + an empty page; 10 = one short page (with `{}` or nothing).
        assert requests == count // 25 + 1
