"""Cluster-wide metrics (worker.coordination.metrics): Redis hash and the ledger's open orders in,
Prometheus text out."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from schemas import Payout
from tests import ledger_reads
from worker.coordination.metrics import LATENCY_BUCKETS, WEBHOOK_OUTCOMES, Metrics
from worker.core.states import FINAL_STATES, State
from worker.db.pool import open_pool
from worker.dev.redis_server import free_port
from worker.ledger import Ledger
from worker.provider.report import ProviderReport


def dead_redis() -> redis.Redis:
    """A client of a port nothing listens on, failing fast (no retries)."""
    return redis.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )  # fmt: skip


@pytest.fixture
def metrics(any_redis: redis.Redis) -> Metrics:
    return Metrics(any_redis, prefix="t")


@pytest.fixture
def counting(ledger: Ledger, metrics: Metrics) -> Ledger:
    """The ledger, counting the orders it makes final in ``metrics`` (as the runtime's)."""
    return Ledger(ledger.pool, on_final=metrics.finalized)


def scrape(
    metrics: Metrics, ledger: Ledger
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a fresh registry's output, by (name, sorted labels)."""
    registry = CollectorRegistry()
    registry.register(metrics.collector(ledger))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def create(ledger: Ledger, n: int) -> list[str]:
    fields = {"amount": "100000", "bankAccountNo": "5464438554636", "bankCode": "0002"}
    payouts = [Payout("ID", "IDR", Decimal("100000"), None, fields) for _ in range(n)]
    return [t for t, _ in ledger.create_orders(payouts, batch_id="b1", market="ID")]


def test_counters_round_trip_through_the_collector(metrics: Metrics, ledger: Ledger) -> None:
    metrics.provider_response("submit", "0015")
    metrics.provider_response("submit", "0015")
    metrics.provider_response("submit", "http_500")
    metrics.provider_response("details", "404")
    metrics.limiter_wait("submit", 0.25)
    metrics.limiter_wait("submit", 0.5)
    metrics.limiter_wait("details", 0.0)
    metrics.token_refresh()
    metrics.webhook("accepted")
    metrics.webhook("forged")
    metrics.webhook("forged")

    s = scrape(metrics, ledger)
    responses = "disburse_provider_responses_total"
    assert s[(responses, (("code", "0015"), ("endpoint", "submit")))] == 2
    assert s[(responses, (("code", "http_500"), ("endpoint", "submit")))] == 1
    assert s[(responses, (("code", "404"), ("endpoint", "details")))] == 1
    assert s[("disburse_limiter_wait_seconds_total", (("endpoint", "submit"),))] == 0.75
    assert s[("disburse_limiter_waits_total", (("endpoint", "submit"),))] == 2
    assert s[("disburse_limiter_waits_total", (("endpoint", "details"),))] == 1
    assert s[("disburse_token_refreshes_total", ())] == 1
    assert s[("disburse_webhooks_total", (("outcome", "accepted"),))] == 1
    assert s[("disburse_webhooks_total", (("outcome", "forged"),))] == 2
    # Known outcomes are exposed at 0 before they happen, so alerts work from the start.
    for outcome in WEBHOOK_OUTCOMES:
        assert ("disburse_webhooks_total", (("outcome", outcome),)) in s


def test_skipped_list_rows_are_counted_and_exposed_from_zero(
    metrics: Metrics, ledger: Ledger
) -> None:
    assert scrape(metrics, ledger)[("disburse_list_rows_skipped_total", ())] == 0
    metrics.list_rows_skipped(2)
    metrics.list_rows_skipped(0)
    metrics.list_rows_skipped(1)
    assert scrape(metrics, ledger)[("disburse_list_rows_skipped_total", ())] == 3


def test_submit_latency_is_a_cumulative_histogram(metrics: Metrics, ledger: Ledger) -> None:
    for seconds in (0.001, 0.005, 0.2, 0.2, 3.0, 42.0):
        metrics.submit_latency(seconds)
    s = scrape(metrics, ledger)

    def bucket(le: str) -> float:
        return s[("disburse_submit_latency_seconds_bucket", (("le", le),))]

    assert bucket("0.005") == 2  # le is inclusive
    assert bucket("0.1") == 2
    assert bucket("0.25") == 4
    assert bucket("5.0") == 5
    assert bucket("10.0") == 5
    assert bucket("+Inf") == 6
    assert s[("disburse_submit_latency_seconds_count", ())] == 6
    assert s[("disburse_submit_latency_seconds_sum", ())] == pytest.approx(45.406)
    assert (
        len([k for k in s if k[0] == "disburse_submit_latency_seconds_bucket"])
        == len(LATENCY_BUCKETS) + 1
    )


def test_orders_by_state_open_from_the_ledger_final_as_counted(
    metrics: Metrics, counting: Ledger
) -> None:
    _queued, processing, succeeded, failed, cancelled = create(counting, 5)
    for t in (processing, succeeded, failed):
        counting.claim(t)
        counting.transition(t, State.PROCESSING, source="submit")
    counting.apply_report(
        succeeded, ProviderReport(State.SUCCEEDED, "p", "0000", ""), source="webhook"
    )
    counting.transition(failed, State.FAILED, source="lookup")
    counting.transition_many([cancelled], State.CANCELLED, source="operator")
    counting.transition(succeeded, State.SUCCEEDED, source="webhook")  # a replay: counted once
    metrics.flush()
    s = scrape(metrics, counting)

    def orders(state: str) -> float:
        return s[("disburse_orders", (("state", state),))]

    def finalized(state: str) -> float:
        return s[("disburse_orders_finalized_total", (("state", state),))]

    assert orders("QUEUED") == 1
    assert orders("PROCESSING") == 1
    assert orders("UNKNOWN") == 0
    open_states = {k[1][0][1] for k in s if k[0] == "disburse_orders"}
    assert open_states == {str(x) for x in State if x not in FINAL_STATES}
    assert (finalized("SUCCEEDED"), finalized("FAILED"), finalized("CANCELLED")) == (1, 1, 1)
    assert finalized("REVERSED") == 0  # exposed before it happens
    assert {k[1][0][1] for k in s if k[0] == "disburse_orders_finalized_total"} == {
        str(x) for x in FINAL_STATES
    }


def test_reconcile_lag_is_the_age_of_the_oldest_pending_order(
    metrics: Metrics, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert scrape(metrics, ledger)[("disburse_reconcile_lag_seconds", ())] == 0
    first, second = create(ledger, 2)
    ledger.claim(first)
    ledger.transition(first, State.UNKNOWN, source="submit")
    ledger.claim(second)
    ledger.transition(second, State.PROCESSING, source="submit")
    entered = ledger_reads.entered_ms(ledger, first, State.UNKNOWN)
    assert entered is not None
    monkeypatch.setattr(ledger, "now_ms", lambda: entered + 90_000)
    lag = scrape(metrics, ledger)[("disburse_reconcile_lag_seconds", ())]
    assert 89.0 <= lag <= 90.0


def test_label_values_cannot_break_the_hash_fields(metrics: Metrics, ledger: Ledger) -> None:
    metrics.provider_response("sub|mit", "a|b\nc" + "x" * 200)
    s = scrape(metrics, ledger)
    ((_, labels),) = [k for k in s if k[0] == "disburse_provider_responses_total"]
    endpoint, code = dict(labels)["endpoint"], dict(labels)["code"]
    assert endpoint == "sub_mit"
    assert "|" not in code and "\n" not in code and len(code) <= 40


def test_shared_across_processes_by_redis(any_redis: redis.Redis, ledger: Ledger) -> None:
    """Two Metrics objects (two workers) add to the same counters."""
    Metrics(any_redis, prefix="t").token_refresh()
    Metrics(any_redis, prefix="t").token_refresh()
    assert (
        scrape(Metrics(any_redis, prefix="t"), ledger)[("disburse_token_refreshes_total", ())] == 2
    )


def test_buffered_metrics_reach_redis_only_when_flushed(
    any_redis: redis.Redis, ledger: Ledger
) -> None:
    buffered = Metrics(any_redis, prefix="t", flush_every=3600)
    for _ in range(3):
        buffered.submit_latency(0.003)
        buffered.limiter_wait("submit", 0.25)
    assert buffered.snapshot() == {}  # nothing written yet
    buffered.flush()
    written = buffered.snapshot()
    assert float(written.pop("lat_sum")) == pytest.approx(0.009)
    assert written == {"lat|0.005": "3", "waits|submit": "3", "wait|submit": "0.75"}
    buffered.flush()  # nothing new: nothing written, nothing doubled
    assert buffered.snapshot()["waits|submit"] == "3"


def test_buffered_metrics_flush_themselves_when_due(any_redis: redis.Redis) -> None:
    buffered = Metrics(any_redis, prefix="t", flush_every=0.05)
    buffered.webhook("accepted")
    time.sleep(0.06)
    buffered.webhook("accepted")  # due: both go out
    assert buffered.snapshot() == {"webhook|accepted": "2"}


def test_recording_never_raises_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    dead = dead_redis()
    metrics = Metrics(dead)
    metrics.provider_response("submit", "0015")
    metrics.submit_latency(0.1)
    metrics.limiter_wait("submit", 0.1)
    metrics.token_refresh()
    metrics.webhook("accepted")
    warnings = [r for r in caplog.records if "metrics not recorded" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not once per call


def test_registering_the_collector_touches_neither_redis_nor_postgresql() -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/ledger"
    with open_pool(nobody, timeout=0.5) as down:
        registry = CollectorRegistry()
        registry.register(Metrics(dead_redis()).collector(Ledger(down)))
        with pytest.raises(redis.ConnectionError):
            generate_latest(registry)
