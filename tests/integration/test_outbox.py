"""Outcomes reach the application: real workers and beat send each payout's events, signed,
to a real receiver, which checks them with ``worker.verify_webhook``."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

import worker
from tests.app_receiver import AppReceiver
from tests.support.cluster import fast_sandbox
from tests.support.events import assert_delivered, states_went_through
from tests.support.waiting import wait_settled
from worker.celery import runtime
from worker.core.samples import sample_rows

pytestmark = pytest.mark.integration

SECRET = "whsec-integration-7d1f"


def app_env(app: AppReceiver) -> dict[str, str]:
    return {"APP_WEBHOOK_URL": app.url, "APP_WEBHOOK_SECRET": SECRET}


def test_every_payout_reaches_the_application_in_the_states_it_went_through(
    cluster_factory: Any,
) -> None:
    with (
        AppReceiver(SECRET) as app,
        cluster_factory(env=app_env(app), sandbox=fast_sandbox(failure_ratio=0.3)),
    ):
        ledger = runtime.ledger()
        paid = worker.enqueue_batch("ID", sample_rows("ID", 60, seed=3))
        held = worker.enqueue_batch("AR", sample_rows("AR", 5, seed=3), hold=True)
        cancelled = worker.enqueue_batch("JP", sample_rows("JP", 5, seed=3), hold=True)
        batch_ids = [b.batch_id for b in (paid, held, cancelled) if b.batch_id is not None]
        assert len(batch_ids) == 3
        worker.approve(batch_ids[1], check_balance=False)
        worker.cancel(batch_ids[2])
        wait_settled(ledger, batch_ids, timeout=120)

        expected = states_went_through(ledger, batch_ids)
        assert_delivered(app, expected, timeout=60)
        finals = {p[-1] for p in expected.values()}
        assert {"SUCCEEDED", "FAILED", "CANCELLED"} <= finals
        assert {tuple(p[:2]) for t, p in expected.items() if p[0] == "HELD"} == {
            ("HELD", "QUEUED"),
            ("HELD", "CANCELLED"),
        }
        assert app.refused == 0

        # The application refuses a body changed on the way, and a request replayed
        # after the tolerance; the same request within it passes (deduplicated by id).
        assert app.last_request is not None
        body, header = app.last_request
        tampered = body.replace(b'"amount":"', b'"amount":"1')
        assert tampered != body
        assert app.post(tampered, header) == 400
        app.clock_offset = 301
        assert app.post(body, header) == 400
        app.clock_offset = 0
        assert app.post(body, header) == 200
        assert app.refused == 2


def test_an_endpoint_failing_for_a_while_gets_every_event_and_holds_nothing_up(
    cluster_factory: Any,
) -> None:
    failing = threading.Event()
    failing.set()
    with (
        AppReceiver(SECRET, answer=lambda _event: 500 if failing.is_set() else 200) as app,
        cluster_factory(env=app_env(app), sandbox=fast_sandbox()) as cluster,
    ):
        ledger = runtime.ledger()
        started = time.monotonic()
        result = worker.enqueue_batch("ID", sample_rows("ID", 200, seed=5))
        assert result.batch_id is not None
        # Submissions and reconciliation go on while every webhook is refused.
        wait_settled(ledger, [result.batch_id], timeout=120)
        settled_in = time.monotonic() - started
        assert app.acked == [] and app.arrived > 0
        received = sorted(p["received_at"] for p in cluster.sandbox.payouts().values())
        with ledger.pool.connection() as conn:
            refused = conn.execute(
                "SELECT count(*) FROM outbox_attempts WHERE status = 500"
            ).fetchone()
        assert refused is not None and refused[0] > 0

        failing.clear()
        healed = time.monotonic()
        assert_delivered(app, states_went_through(ledger, [result.batch_id]), timeout=120)
        print(
            f"200 payouts: submitted over {received[-1] - received[0]:.1f} s and settled in "
            f"{settled_in:.1f} s while the endpoint answered 500 ({refused[0]} attempts "
            f"refused); every event delivered {time.monotonic() - healed:.1f} s after it healed"
        )


class FlakyEndpoint:
    """An application endpoint that is alive but unreliable: 30% of requests answered
    500, 5% answered (200) only after 12 s, past the sender's 10 s; no event refused
    more than 3 times. It keeps the order in which each payout's events arrived."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._refusals: Counter[str] = Counter()
        self.arrivals: dict[str, list[int]] = {}  # trade_no -> event cursors as they came
        self.answered_500 = 0
        self.answered_late = 0

    def __call__(self, event: dict[str, Any]) -> int:
        with self._lock:
            cursor = int(event["id"].removeprefix("evt_"))
            self.arrivals.setdefault(event["data"]["trade_no"], []).append(cursor)
            roll = self._random.random()
            refusable = self._refusals[event["id"]] < 3
            if refusable and roll < 0.35:
                self._refusals[event["id"]] += 1
            late = refusable and 0.30 <= roll < 0.35
            self.answered_500 += refusable and roll < 0.30
            self.answered_late += late
        if late:
            time.sleep(12)
            return 200
        return 500 if refusable and roll < 0.30 else 200


def test_a_flaky_endpoint_gets_every_final_state_within_a_minute_in_order(
    cluster_factory: Any,
) -> None:
    endpoint = FlakyEndpoint(seed=23)
    with (
        AppReceiver(SECRET, answer=endpoint) as app,
        cluster_factory(env={**app_env(app), "VEXORA_RATE_LIMIT": "100"}, sandbox=fast_sandbox()),
    ):
        ledger = runtime.ledger()
        result = worker.enqueue_batch("ID", sample_rows("ID", 400, seed=23))
        assert result.batch_id is not None
        wait_settled(ledger, [result.batch_id], timeout=120)
        settled = time.monotonic()
        expected = states_went_through(ledger, [result.batch_id])
        assert_delivered(app, expected, timeout=60)
        took = time.monotonic() - settled
        # No event of a payout arrived after a later one of the same payout (a retry
        # arriving again after its own later event would).
        assert all(cursors == sorted(cursors) for cursors in endpoint.arrivals.values())
        assert endpoint.answered_500 > 0 and endpoint.answered_late > 0
    print(
        f"400 payouts, endpoint answering 500 to 30% and after 12 s to 5%: every state "
        f"acknowledged {took:.1f} s after the batch settled ({app.arrived} requests, "
        f"{endpoint.answered_500} answered 500, {endpoint.answered_late} after 12 s)"
    )
