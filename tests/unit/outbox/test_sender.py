"""The webhook sender against a real HTTP receiver, on a real PostgreSQL: every event
signed and recorded, each payout's in order while other payouts go on, a flaky endpoint
served at full speed, a dead one probed one request at a time, and runs that hand over
without waiting for slow answers."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.app_receiver import AppReceiver
from tests.unit.outbox.support import (
    SECRET,
    endpoint_open,
    let_time_pass,
    new_order,
    rows,
    sender,
    walk,
)
from worker.core.defaults import OUTBOX_WINDOW_LEAST
from worker.core.states import State
from worker.ledger import Ledger
from worker.outbox import Deliveries

PAID = (State.SUBMITTING, State.PROCESSING, State.SUCCEEDED)


class Endpoint:
    """The application's answers, as a test sets them (``status``, after ``delay``
    seconds), and what it saw: each event's arrivals, each payout's events in the order
    they came, and the most requests it had at once."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.arrivals: Counter[str] = Counter()
        self.order: dict[str, list[int]] = {}  # trade_no -> event cursors as they came
        self.most_at_once = 0
        self._at_once = 0
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> int:
        with self._lock:
            self.arrivals[event["id"]] += 1
            cursor = int(event["id"].removeprefix("evt_"))
            self.order.setdefault(event["data"]["trade_no"], []).append(cursor)
            self._at_once += 1
            self.most_at_once = max(self.most_at_once, self._at_once)
            status, delay = self.answer(event)
        time.sleep(delay)
        with self._lock:
            self._at_once -= 1
        return status

    def answer(self, _event: dict[str, Any]) -> tuple[int, float]:
        return self.status, self.delay

    def in_order(self) -> bool:
        """No payout's event came after a later one of the same payout."""
        return all(cursors == sorted(cursors) for cursors in self.order.values())


def test_every_event_is_delivered_signed_in_order_and_recorded(
    ledger: Ledger, deliveries: Deliveries
) -> None:
    orders = [new_order(ledger) for _ in range(5)]
    for trade_no in orders:
        walk(ledger, trade_no, *PAID)
    with AppReceiver(SECRET) as app:
        report = sender(deliveries, app.url).run(budget=10)
    assert report.taken == report.delivered == 15 and report.failed_attempts == 0
    assert app.refused == 0
    assert app.states() == {t: ["QUEUED", "PROCESSING", "SUCCEEDED"] for t in orders}
    assert rows(ledger, "SELECT DISTINCT state, attempts, last_status FROM outbox_deliveries") == [
        ("delivered", 1, 200)
    ]
    attempts = rows(ledger, "SELECT status, error, latency_ms >= 0 FROM outbox_attempts")
    assert attempts == [(200, None, True)] * 15


def test_a_dead_endpoint_gets_one_probe_at_a_time_and_every_event_once_it_answers(
    ledger: Ledger, deliveries: Deliveries
) -> None:
    orders = [new_order(ledger) for _ in range(OUTBOX_WINDOW_LEAST + 10)]
    for trade_no in orders:
        walk(ledger, trade_no, State.SUBMITTING, State.PROCESSING)
    endpoint = Endpoint(status=500)
    with AppReceiver(SECRET, answer=endpoint) as app:
        dying = sender(deliveries, app.url).run(budget=2)
        assert dying.delivered == 0 and dying.failed_attempts >= OUTBOX_WINDOW_LEAST
        assert endpoint_open(ledger)

        # Open: one request at a time, each after the last one's backoff.
        endpoint.delay, endpoint.most_at_once = 0.3, 0
        let_time_pass(ledger)
        (before,) = rows(ledger, "SELECT count(*), max(at) FROM outbox_attempts")
        probing = sender(deliveries, app.url).run(budget=3)
        assert endpoint.most_at_once == 1
        # The first at once, the next 1-2 s after it failed, the third not before 4.6 s.
        assert 1 <= probing.failed_attempts <= 2 and probing.delivered == 0
        ((probes_failed, waits),) = rows(
            ledger, "SELECT failures, retry_at > now() + interval '0.4 s' FROM outbox_state"
        )
        assert probes_failed >= probing.failed_attempts and waits
        assert rows(ledger, "SELECT count(*) FROM outbox_attempts WHERE at > %s", before[1]) == [
            (probing.failed_attempts,)
        ]

        endpoint.status, endpoint.delay = 204, 0.0
        let_time_pass(ledger)
        sender(deliveries, app.url).run(budget=10)
    assert app.states() == {t: ["QUEUED", "PROCESSING"] for t in orders}
    assert not endpoint_open(ledger)
    assert rows(ledger, "SELECT failures FROM outbox_state") == [(0,)]
    failed = rows(ledger, "SELECT DISTINCT status, error FROM outbox_attempts WHERE status <> 204")
    assert failed == [(500, "HTTP 500")]


class Flaky(Endpoint):
    """Refuses 35% of requests (500), no event more than 3 times."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._random = random.Random(seed)
        self.refusals: Counter[str] = Counter()

    def answer(self, event: dict[str, Any]) -> tuple[int, float]:
        if self.refusals[event["id"]] < 3 and self._random.random() < 0.35:
            self.refusals[event["id"]] += 1
            return 500, 0.0
        return 200, 0.0


def test_a_flaky_endpoint_never_trips_the_breaker_and_gets_every_event_in_order(
    ledger: Ledger, deliveries: Deliveries, caplog: pytest.LogCaptureFixture
) -> None:
    orders = [new_order(ledger) for _ in range(60)]
    for trade_no in orders:
        walk(ledger, trade_no, *PAID)
    endpoint = Flaky(seed=5)
    caplog.set_level(logging.WARNING, logger="worker.outbox.sender")
    with AppReceiver(SECRET, answer=endpoint) as app:
        for _ in range(20):
            sender(deliveries, app.url).run(budget=2)
            assert not endpoint_open(ledger)
            if len(app.states()) == len(orders) and all(
                len(states) == 3 for states in app.states().values()
            ):
                break
            let_time_pass(ledger)
    assert app.states() == {t: ["QUEUED", "PROCESSING", "SUCCEEDED"] for t in orders}
    assert endpoint.in_order()
    # Refused often, and several times in a row (which tripped the breaker before),
    # never sent one request at a time.
    assert sum(endpoint.refusals.values()) > 60
    assert "one request at a time" not in caplog.text


def test_concurrency_grows_on_successes_up_to_its_cap(
    ledger: Ledger, deliveries: Deliveries
) -> None:
    for _ in range(150):
        new_order(ledger)
    endpoint = Endpoint(delay=0.05)
    with AppReceiver(SECRET, answer=endpoint) as app:
        report = sender(deliveries, app.url, concurrency=2, max_concurrency=12).run(budget=20)
    assert report.delivered == 150 and len(app.acked) == 150
    assert 2 < endpoint.most_at_once <= 12


def test_slow_answers_do_not_hold_the_other_events(ledger: Ledger, deliveries: Deliveries) -> None:
    slow = {new_order(ledger) for _ in range(4)}  # sent first: the oldest events
    fast = {new_order(ledger) for _ in range(20)}

    class SlowForSome(Endpoint):
        def answer(self, event: dict[str, Any]) -> tuple[int, float]:
            return 200, (2.0 if event["data"]["trade_no"] in slow else 0.0)

    endpoint = SlowForSome()
    with AppReceiver(SECRET, answer=endpoint) as app:
        # Two at a time; a request unanswered after 0.2 s no longer counts.
        report = sender(deliveries, app.url, concurrency=2, max_concurrency=2, slow=0.2).run(
            budget=10
        )
    assert report.delivered == 24
    acked = [event["data"]["trade_no"] for event in app.acked]
    assert set(acked[:20]) == fast and set(acked[20:]) == slow
    assert endpoint.most_at_once <= len(slow) + 2


def test_one_payout_s_refused_event_holds_only_that_payout(
    ledger: Ledger, deliveries: Deliveries
) -> None:
    stuck, *flowing = [new_order(ledger) for _ in range(30)]
    for trade_no in [stuck, *flowing]:
        walk(ledger, trade_no, *PAID)

    class RefusingOne(Endpoint):
        def answer(self, event: dict[str, Any]) -> tuple[int, float]:
            return (500 if event["data"]["trade_no"] == stuck else 200), 0.0

    endpoint = RefusingOne()
    with AppReceiver(SECRET, answer=endpoint) as app:
        for _ in range(3):
            sender(deliveries, app.url).run(budget=2)
            let_time_pass(ledger)
    assert app.states() == {t: ["QUEUED", "PROCESSING", "SUCCEEDED"] for t in flowing}
    # Its first event tried again and again; its later ones wait for it.
    (first, *later) = sorted(set(endpoint.order[stuck]))
    assert later == [] and endpoint.arrivals[f"evt_{first}"] >= 3
    assert endpoint.in_order()


def test_a_payout_s_later_event_waits_for_its_earlier_one_until_it_is_given_up(
    ledger: Ledger, deliveries: Deliveries
) -> None:
    stuck, flowing = new_order(ledger), new_order(ledger)
    walk(ledger, stuck, State.SUBMITTING, State.PROCESSING)
    walk(ledger, flowing, State.SUBMITTING, State.PROCESSING)

    def answer(event: dict[str, Any]) -> int:
        refused = event["data"]["trade_no"] == stuck and event["type"] == "payout.queued"
        return 400 if refused else 200

    with AppReceiver(SECRET, answer=answer) as app:
        sender(deliveries, app.url).run(budget=3)
        assert app.states() == {flowing: ["QUEUED", "PROCESSING"]}
        # Refused for days: given up, listed, and the payout's next event goes out.
        with ledger.pool.connection() as conn:
            conn.execute("UPDATE outbox_deliveries SET created_at = now() - interval '4 days'")
        let_time_pass(ledger)
        report = sender(deliveries, app.url).run(budget=3)
    assert report.given_up == 1
    assert app.states()[stuck] == ["PROCESSING"]
    (failing,) = deliveries.failing()
    assert (failing.state, failing.last_status, failing.last_error) == ("failed", 400, "HTTP 400")


def test_a_slow_answer_holds_neither_its_run_nor_the_next(
    ledger: Ledger, deliveries: Deliveries
) -> None:
    slow = new_order(ledger)

    class SlowForOne(Endpoint):
        def answer(self, event: dict[str, Any]) -> tuple[int, float]:
            return 200, (4.0 if event["data"]["trade_no"] == slow else 0.0)

    endpoint = SlowForOne()
    reports = []
    with AppReceiver(SECRET, answer=endpoint) as app:
        first = threading.Thread(
            target=lambda: reports.append(
                sender(deliveries, app.url, timeouts=(1.0, 8.0)).run(budget=0.5)
            )
        )
        first.start()
        walk(ledger, slow, State.SUBMITTING)
        # The first run's budget is over while its request waits for the answer: it
        # hands over, and the next run sends other payouts' events, not that one again.
        time.sleep(1.0)
        assert endpoint.arrivals and first.is_alive()
        others = [new_order(ledger) for _ in range(5)]
        second = sender(deliveries, app.url).run(budget=1)
        waiting = first.is_alive()
        first.join()
    assert second.ran and second.delivered == 5 and waiting
    assert reports[0].delivered == 1  # recorded when it came, after the lock was released
    assert endpoint.arrivals == Counter({e["id"]: 1 for e in app.acked})
    assert set(app.states()) == {slow, *others}


def test_an_event_in_flight_is_not_sent_again_until_its_lease_is_over(
    ledger: Ledger, deliveries: Deliveries
) -> None:
    new_order(ledger)
    with deliveries.pool.connection() as conn:
        conn.autocommit = True
        deliveries.take(conn, wait=5.0)
        # A run that claimed it, and died before recording its attempt.
        (claimed,) = deliveries.claim(conn, 10, lease=1.0)
        assert deliveries.claim(conn, 10, lease=1.0) == []
    with AppReceiver(SECRET) as app:
        assert sender(deliveries, app.url).run(budget=0.5).delivered == 0
        time.sleep(1.0)
        assert sender(deliveries, app.url).run(budget=2).delivered == 1
    assert [e["id"] for e in app.acked] == [f"evt_{claimed.event_id}"]


def test_no_answer_in_time_is_a_failed_attempt(ledger: Ledger, deliveries: Deliveries) -> None:
    new_order(ledger)

    def slow(_event: dict[str, Any]) -> int:
        time.sleep(1.0)
        return 200

    with AppReceiver(SECRET, answer=slow) as app:
        report = sender(deliveries, app.url, timeouts=(1.0, 0.3)).run(budget=0.5)
    assert report.failed_attempts == 1
    ((status, error, latency),) = rows(
        ledger, "SELECT status, error, latency_ms FROM outbox_attempts"
    )
    assert status is None and error.startswith("ReadTimeout") and latency >= 300


def test_neither_secret_nor_url_credentials_reach_logs_or_records(
    ledger: Ledger, deliveries: Deliveries, caplog: pytest.LogCaptureFixture
) -> None:
    new_order(ledger)
    with AppReceiver(SECRET) as app:
        closed = app.url  # nothing listens there once the receiver is closed
    url = closed.replace("http://", "http://hookuser:hookpass123@")
    with caplog.at_level(logging.DEBUG):
        report = sender(deliveries, url).run(budget=2)
    assert report.failed_attempts >= 1
    errors = " ".join(e for (e,) in rows(ledger, "SELECT error FROM outbox_attempts"))
    assert "ConnectionError" in errors
    for secret in (SECRET, "hookpass123"):
        assert secret not in caplog.text and secret not in errors


def test_one_run_at_a_time(ledger: Ledger, deliveries: Deliveries, ledger_url: str) -> None:
    new_order(ledger)
    with psycopg.connect(ledger_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (0x64697362_6F757462,))
        assert sender(deliveries, "http://127.0.0.1:9/").run(budget=1).ran is False
    assert rows(ledger, "SELECT count(*) FROM outbox_attempts") == [(0,)]


def test_redelivery_sends_the_same_event_again(ledger: Ledger, deliveries: Deliveries) -> None:
    trade_no = new_order(ledger)
    with AppReceiver(SECRET) as app:
        sender(deliveries, app.url).run(budget=3)
        (first,) = app.acked
        events = deliveries.feed.by_ids([int(first["id"].removeprefix("evt_"))])
        assert deliveries.redeliver(events) == 1
        assert deliveries.redeliver(events) == 0  # already pending
        sender(deliveries, app.url).run(budget=3)
    assert app.acked == [first, first]
    assert app.states() == {trade_no: ["QUEUED"]}
