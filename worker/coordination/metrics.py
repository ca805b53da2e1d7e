"""Cluster-wide metrics: counters kept in one Redis hash, exposed by the web process.

Workers run on many machines, so a per-process ``prometheus_client`` registry would
show one process's share only. Every worker instead adds to one hash
(``<prefix>:metrics``) with ``HINCRBY`` / ``HINCRBYFLOAT``, and the web process turns
the hash, and the ledger's counts of open orders, into Prometheus metrics with
:meth:`Metrics.collector` on every scrape.

Open orders (not final) are counted by the ledger in one query on its index of open
orders, which stays the size of the work in progress. Final orders are never counted
in the table, which grows forever: the ledger reports every order it makes final
(``Ledger(on_final=Metrics.finalized)``) and they are counted here, as a counter that
starts again from 0 if Redis loses the hash (Prometheus reads that as a restart).

Submit workers record several values per payout; writing each at once cost a fifth
of a payout's time. So each process has one ``Metrics`` (worker.celery.runtime) with
``flush_every=1.0``: values add up in the process and go to Redis in one round trip
at most once a second, and on :meth:`Metrics.flush` at the end of every task and
after every webhook answer. A scrape may lag by that second, and a killed worker
loses at most its last second of metrics, never a payout.

The recording methods never raise into the caller: a metric is not worth failing a
payout for. Redis errors are swallowed and logged (at most once a minute).

Hash fields (``|`` separated, label values sanitised so they cannot contain it):

    resp|<endpoint>|<code>    provider responses
    lat|<le>                  submit latency, per bucket (not cumulative), ``+Inf`` last
    lat_sum                   submit latency, total seconds
    wait|<endpoint>           rate limiter wait, total seconds
    waits|<endpoint>          rate limiter waits, count
    token_refresh             OAuth token refreshes
    webhook|<outcome>         webhook outcomes
    final|<state>             orders made final, by their final state
    list_skipped              rows of the disbursement list skipped as malformed
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from worker.core import keys
from worker.core.states import FINAL_STATES, State

if TYPE_CHECKING:
    from worker.ledger import Ledger

log = logging.getLogger(__name__)

# Submit latency buckets, seconds (upper bounds; +Inf is implied).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Webhook outcomes always exposed (0 until seen), so alerts on them work from the start.
WEBHOOK_OUTCOMES: tuple[str, ...] = (
    "accepted",  # verified, state moved
    "replayed",  # verified, the order was already in that state
    "contradicts_final",  # verified, the order is final in another state: discrepancy
    "out_of_order",  # verified, the move is not allowed from the order's current state
    "unknown_order",  # no such tradeNo in the ledger
    "unknown_status",  # verified, a status code we do not know: a lookup was published
    "forged",  # a sign that no provider account's secret makes
    "wrong_account",  # signed with another account's secret than the order's market's
    "no_account",  # signed, for an order whose market has no provider account configured
    "unconfirmed",  # verified FAILED the provider must confirm (worker.core.confirm): lookup
    "other_id",  # verified, names another provider id than the stored one: REVIEW
    "unsigned",  # no sign, and unsigned notifications are not allowed
    "unsigned_lookup",  # no sign, allowed: a lookup was published, no state set
    "malformed",  # not JSON, not an object, fields missing
    "oversized",  # body over the limit
    "unknown_path",  # a POST to a path the receiver does not serve (see NOTIFY_URL)
)
# States whose counts come from the ledger's index of open orders.
OPEN_STATES: tuple[State, ...] = tuple(s for s in State if s not in FINAL_STATES)
# States whose age is the reconcile lag.
LAG_STATES: tuple[State, ...] = (State.PROCESSING, State.UNKNOWN)

_LABEL = re.compile(r"[^A-Za-z0-9_.:-]")
_MAX_LABEL = 40
_ERROR_LOG_EVERY = 60.0


def _label(value: object) -> str:
    """A label value safe to store in a field name: no ``|``, bounded length."""
    text = _LABEL.sub("_", str(value))[:_MAX_LABEL]
    return text or "_"


def _bucket_name(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(float(le))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Metrics:
    """Record metrics from any process; expose them from one with :meth:`collector`."""

    def __init__(
        self, client: redis.Redis, prefix: str = "disburse", *, flush_every: float = 0.0
    ) -> None:
        self.redis = client
        self.key = keys.metrics(prefix)
        self.flush_every = flush_every
        self._counts: Counter[str] = Counter()
        self._sums: defaultdict[str, float] = defaultdict(float)
        self._flushed = time.monotonic()
        self._last_error = 0.0
        self._lock = threading.Lock()

    # recording (workers and the web process) -------------------------------------
    def provider_response(self, endpoint: str, code: str) -> None:
        """One answer from a provider, e.g. ("submit", "0015"), ("submit", "http_500")."""
        self._add({f"resp|{_label(endpoint)}|{_label(code)}": 1})

    def submit_latency(self, seconds: float) -> None:
        """Duration of one submit HTTP exchange (a histogram with fixed buckets)."""
        seconds = max(0.0, float(seconds))
        le = next((b for b in LATENCY_BUCKETS if seconds <= b), float("inf"))
        self._add({f"lat|{_bucket_name(le)}": 1}, {"lat_sum": seconds})

    def limiter_wait(self, endpoint: str, seconds: float) -> None:
        """Time one caller waited for the cluster-wide rate limiter of ``endpoint``."""
        name = _label(endpoint)
        self._add({f"waits|{name}": 1}, {f"wait|{name}": max(0.0, float(seconds))})

    def token_refresh(self) -> None:
        """The shared OAuth token was fetched anew."""
        self._add({"token_refresh": 1})

    def webhook(self, outcome: str) -> None:
        """One webhook notification handled, by outcome (see ``WEBHOOK_OUTCOMES``)."""
        self._add({f"webhook|{_label(outcome)}": 1})

    def finalized(self, state: State, count: int) -> None:
        """``count`` orders were made final in ``state`` (the ledger's ``on_final``)."""
        self._add({f"final|{_label(state)}": count})

    def list_rows_skipped(self, count: int) -> None:
        """``count`` malformed rows of the disbursement list were skipped (worker.flows.walk)."""
        if count:
            self._add({"list_skipped": count})

    def _add(self, counts: dict[str, int], sums: dict[str, float] | None = None) -> None:
        with self._lock:
            self._counts.update(counts)
            for field, value in (sums or {}).items():
                self._sums[field] += value
            due = time.monotonic() - self._flushed >= self.flush_every
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what this process recorded since the last flush, in one round trip."""
        with self._lock:
            counts, sums = self._counts, self._sums
            self._counts, self._sums = Counter(), defaultdict(float)
            self._flushed = time.monotonic()
        if not counts and not sums:
            return
        try:
            # One transaction, so a scrape never sees half of a histogram's update.
            pipe = self.redis.pipeline(transaction=True)
            for field, count in counts.items():
                pipe.hincrby(self.key, field, count)
            for field, total in sums.items():
                pipe.hincrbyfloat(self.key, field, total)
            pipe.execute()
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_error < _ERROR_LOG_EVERY and self._last_error:
                return
            self._last_error = now
        log.warning("metrics not recorded (%s: %s)", type(exc).__name__, exc)

    # reading (the web process) ----------------------------------------------------
    def snapshot(self) -> dict[str, str]:
        """The raw hash (raises on Redis errors: a failed scrape should look failed)."""
        raw = self.redis.hgetall(self.key)
        return {_text(k): _text(v) for k, v in raw.items()}

    def collector(self, ledger: Ledger) -> Collector:
        """A Prometheus collector reading this hash and ``ledger`` on every scrape."""
        return _RedisCollector(self, ledger)


class _RedisCollector(Collector):
    def __init__(self, metrics: Metrics, ledger: Ledger) -> None:
        self.metrics = metrics
        self.ledger = ledger

    def describe(self) -> Iterable[Metric]:
        # Registration must not touch Redis: describe without values.
        return []

    def collect(self) -> Iterator[Metric]:
        data = self.metrics.snapshot()
        open_states = self.ledger.open_states()
        yield self._orders(open_states)
        yield self._reconcile_lag(open_states)
        yield from _from_hash(data)

    def _orders(self, open_states: dict[State, tuple[int, int]]) -> Metric:
        family = GaugeMetricFamily(
            "disburse_orders",
            "Payout orders not final, by state, cluster-wide "
            "(final ones: disburse_orders_finalized_total).",
            labels=["state"],
        )
        for state in OPEN_STATES:
            family.add_metric([str(state)], open_states.get(state, (0, 0))[0])
        return family

    def _reconcile_lag(self, open_states: dict[State, tuple[int, int]]) -> Metric:
        entered = [open_states[state][1] for state in LAG_STATES if state in open_states]
        lag = max(0.0, (self.ledger.now_ms() - min(entered)) / 1000.0) if entered else 0.0
        return GaugeMetricFamily(
            "disburse_reconcile_lag_seconds",
            "Age of the oldest PROCESSING or UNKNOWN order (0 when there is none).",
            value=lag,
        )


def _from_hash(data: dict[str, str]) -> Iterator[Metric]:
    responses = CounterMetricFamily(
        "disburse_provider_responses",
        "Provider answers by endpoint and code (http_<status> for HTTP errors).",
        labels=["endpoint", "code"],
    )
    wait = CounterMetricFamily(
        "disburse_limiter_wait_seconds",
        "Seconds spent waiting for the cluster-wide rate limiter, by endpoint.",
        labels=["endpoint"],
    )
    waits = CounterMetricFamily(
        "disburse_limiter_waits",
        "Number of rate limiter acquisitions, by endpoint.",
        labels=["endpoint"],
    )
    webhooks: dict[str, float] = dict.fromkeys(WEBHOOK_OUTCOMES, 0.0)
    finals: dict[str, float] = dict.fromkeys(sorted(FINAL_STATES), 0.0)
    buckets: dict[str, float] = {}
    for field, value in sorted(data.items()):
        kind, _, rest = field.partition("|")
        number = float(value)
        if kind == "resp":
            endpoint, _, code = rest.partition("|")
            responses.add_metric([endpoint, code], number)
        elif kind == "wait":
            wait.add_metric([rest], number)
        elif kind == "waits":
            waits.add_metric([rest], number)
        elif kind == "webhook":
            webhooks[rest] = number
        elif kind == "final":
            finals[rest] = number
        elif kind == "lat":
            buckets[rest] = number
    yield responses
    yield HistogramMetricFamily(
        "disburse_submit_latency_seconds",
        "Duration of submit HTTP exchanges with the payout provider.",
        buckets=_cumulative(buckets),
        sum_value=float(data.get("lat_sum", 0.0)),
    )
    yield wait
    yield waits
    yield CounterMetricFamily(
        "disburse_token_refreshes",
        "OAuth token refreshes by any worker.",
        value=float(data.get("token_refresh", 0)),
    )
    family = CounterMetricFamily(
        "disburse_webhooks", "Webhook notifications by outcome.", labels=["outcome"]
    )
    for outcome, number in sorted(webhooks.items()):
        family.add_metric([outcome], number)
    yield family
    yield CounterMetricFamily(
        "disburse_list_rows_skipped",
        "Rows of the provider's disbursement list skipped as malformed (no id, bad amount).",
        value=float(data.get("list_skipped", 0)),
    )
    final = CounterMetricFamily(
        "disburse_orders_finalized",
        "Orders made final, by final state, since the metrics began.",
        labels=["state"],
    )
    for state, number in sorted(finals.items()):
        final.add_metric([state], number)
    yield final


def _cumulative(per_bucket: dict[str, float]) -> list[tuple[str, float]]:
    total = 0.0
    result: list[tuple[str, float]] = []
    for le in (*LATENCY_BUCKETS, float("inf")):
        name = _bucket_name(le)
        total += per_bucket.get(name, 0.0)
        result.append((name, total))
    return result
