"""The webhook receiver (worker.web.notify) on the test ledger and fakeredis, through werkzeug's
test client: routes, body limits, answers, health, metrics. The webhook's rules are
test_webhook's."""

from __future__ import annotations

import io
import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.test import Client, EnvironBuilder, TestResponse, run_wsgi_app

from tests import ledger_reads
from tests.unit.notifications import (
    SECRET,
    Publisher,
    local_client,
    new_order,
    notification,
    signed,
    state_of,
)
from worker.coordination.metrics import Metrics
from worker.core.accounts import MarketAccount
from worker.core.settings import Settings
from worker.core.states import State
from worker.db.pool import open_pool
from worker.dev.redis_server import free_port
from worker.ledger import Ledger
from worker.web.notify import MAX_BODY, create_app, notify_paths

# Every market's account, but for its secret (no setting has a built-in value).
ACCOUNT = {"vexora_base_url": "https://pay.example", "vexora_merchant_no": "M-1"}


@dataclass
class Receiver:
    client: Client
    ledger: Ledger
    publisher: Publisher


def make_receiver(
    ledger: Ledger,
    client: redis.Redis | None = None,
    *,
    allow_unsigned: bool = False,
    notify_url: str = Settings.notify_url,
) -> Receiver:
    client = client or fakeredis.FakeRedis(decode_responses=True)
    publisher = Publisher()
    config = Settings(
        **ACCOUNT,
        vexora_app_secret=SECRET,
        allow_unsigned_webhooks=allow_unsigned,
        notify_url=notify_url,
    )
    metrics = Metrics(client, prefix="t")
    # Counting the orders it makes final, as the runtime's ledger does.
    ledger = Ledger(ledger.pool, on_final=metrics.finalized)
    app = create_app(ledger, config, publisher, metrics, redis_client=client)
    return Receiver(local_client(app), ledger, publisher)


def dead_redis() -> redis.Redis:
    """A client of a port nothing listens on, failing fast (no retries)."""
    return redis.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )  # fmt: skip


@pytest.fixture
def rx(ledger: Ledger, fake_redis: redis.Redis) -> Receiver:
    return make_receiver(ledger, fake_redis)


@pytest.fixture
def rx_unsigned(ledger: Ledger, fake_redis: redis.Redis) -> Receiver:
    return make_receiver(ledger, fake_redis, allow_unsigned=True)


def post(rx: Receiver, body: Any, path: str = "/notify") -> TestResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return rx.client.post(path, data=data, content_type="application/json")


def assert_ok(response: TestResponse) -> None:
    assert response.status_code == 200
    assert response.get_data() == b"OK"
    assert response.mimetype == "text/plain"


# --- notifications over HTTP -----------------------------------------------------------


def test_a_verified_notification_moves_the_order_and_is_answered_ok(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    assert_ok(post(rx, signed(notification(trade_no))))
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED
    assert ledger_reads.history(rx.ledger, trade_no)[-1][1] == "SUCCEEDED webhook"


def test_a_refused_notification_is_answered_with_its_status(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    response = post(rx, signed(notification(trade_no), secret="someone-elses-secret"))
    assert response.status_code == 401
    assert response.get_data() == b"bad signature"
    assert state_of(rx.ledger, trade_no) == State.PROCESSING


def test_the_webhook_log_lines_are_written_with_the_trade_no(
    rx: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    trade_no = new_order(rx.ledger)
    rx.client.get("/healthz")  # resolves the dependencies, which logs a line of its own
    with caplog.at_level(logging.INFO, logger="worker.web.notify"):
        assert_ok(post(rx, signed(notification(trade_no, amount="999"))))
    lines = [(r.levelno, r.getMessage(), r.__dict__.get("trade_no")) for r in caplog.records]
    assert lines == [
        (logging.ERROR, "webhook reports amount '999', the order has 100000", trade_no),
        (logging.INFO, "webhook: -> SUCCEEDED", trade_no),
    ]


def test_a_notification_signed_by_a_market_own_account_verifies(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    ar = MarketAccount(merchant_no="M-AR", app_secret="ar-secret")
    config = Settings(**ACCOUNT, vexora_app_secret=SECRET, vexora_markets={"AR": ar})
    publisher = Publisher()
    app = create_app(
        ledger, config, publisher, Metrics(fake_redis, prefix="t"), redis_client=fake_redis
    )
    rx = Receiver(local_client(app), ledger, publisher)
    trade_no = new_order(ledger, market="AR")
    assert post(rx, signed(notification(trade_no), "another-secret")).status_code == 401
    assert_ok(post(rx, signed(notification(trade_no), "ar-secret")))
    assert state_of(ledger, trade_no) is State.SUCCEEDED


def test_a_notification_signed_by_another_market_account_is_401_and_counted(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    """AR's secret vouches for AR's orders only: an ID order stays as it is."""
    ar = MarketAccount(merchant_no="M-AR", app_secret="ar-secret")
    config = Settings(**ACCOUNT, vexora_app_secret=SECRET, vexora_markets={"AR": ar})
    app = create_app(
        ledger, config, Publisher(), Metrics(fake_redis, prefix="t"), redis_client=fake_redis
    )
    rx = Receiver(local_client(app), ledger, Publisher())
    trade_no = new_order(ledger, market="ID")
    response = post(rx, signed(notification(trade_no), "ar-secret"))
    assert (response.status_code, response.get_data()) == (401, b"bad signature")
    assert state_of(ledger, trade_no) is State.PROCESSING
    assert_ok(post(rx, signed(notification("c" * 32), "ar-secret")))  # unknown: OK
    assert ledger.get("c" * 32) is None
    text = rx.client.get("/metrics").get_data(as_text=True)
    assert 'disburse_webhooks_total{outcome="wrong_account"} 1.0' in text
    assert 'disburse_webhooks_total{outcome="unknown_order"} 1.0' in text
    assert 'disburse_webhooks_total{outcome="accepted"} 0.0' in text


def test_unsigned_notifications_are_allowed_by_the_setting(rx_unsigned: Receiver) -> None:
    rx = rx_unsigned
    trade_no = new_order(rx.ledger)
    assert_ok(post(rx, notification(trade_no)))
    assert rx.publisher.calls == [[trade_no]]


def test_broker_down_on_a_lookup_is_503(rx_unsigned: Receiver) -> None:
    rx = rx_unsigned
    trade_no = new_order(rx.ledger)
    rx.publisher.fail = True
    assert post(rx, notification(trade_no)).status_code == 503


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"{", b"\xff\xfe\x00", b"[" * 60000, b'{"a": NaN'],
)
def test_bad_json_is_400(rx: Receiver, data: bytes) -> None:
    assert post(rx, data).status_code == 400


@pytest.mark.parametrize("body", [[], [1, 2], "OK", 0, None, True])
def test_json_that_is_not_an_object_is_400(rx: Receiver, body: Any) -> None:
    assert post(rx, body).status_code == 400


def test_oversized_body_is_413(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    body = signed(notification(trade_no, padding="x" * MAX_BODY))
    assert post(rx, body).status_code == 413
    assert state_of(rx.ledger, trade_no) == State.PROCESSING


def test_oversized_body_without_content_length_is_413(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    """A chunked body (no Content-Length) is read only up to the limit."""
    received: list[bytes] = []

    class Stream(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            received.append(chunk)
            return chunk

    metrics = Metrics(fake_redis, prefix="t")
    app = create_app(
        ledger,
        Settings(**ACCOUNT, vexora_app_secret=SECRET),
        Publisher(),
        metrics,
        redis_client=fake_redis,
    )
    data = json.dumps({"padding": "x" * (4 * MAX_BODY)}).encode()
    environ = EnvironBuilder(
        "/notify", method="POST", content_type="application/json"
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": Stream(data), "wsgi.input_terminated": True})
    _, status, _ = run_wsgi_app(app, environ)
    assert status.startswith("413")
    assert sum(map(len, received)) <= MAX_BODY + 1


def test_wrong_method_is_405(rx: Receiver) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = rx.client.open("/notify", method=method)
        assert response.status_code == 405
        assert "POST" in response.headers["Allow"]
    assert rx.client.post("/healthz").status_code == 405


def test_unknown_path_is_404(rx: Receiver) -> None:
    assert rx.client.get("/nope").status_code == 404


# --- the path of NOTIFY_URL ------------------------------------------------------------

CONFIGURED = "https://payouts.example.com/notify/vexora"


@pytest.mark.parametrize(
    ("url", "paths"),
    [
        (CONFIGURED, ("/notify/vexora", "/notify")),
        ("https://127.0.0.1:8701/notify", ("/notify",)),
        ("https://payouts.example.com", ("/", "/notify")),
        ("https://h.example/hooks/in/?token=1#x", ("/hooks/in/", "/notify")),
        ("https://h.example/pay%20outs", ("/pay outs", "/notify")),
    ],
)
def test_notifications_are_served_on_the_path_of_notify_url(
    url: str, paths: tuple[str, ...]
) -> None:
    assert notify_paths(url) == paths


@pytest.mark.parametrize("path", ["/notify/vexora", "/notify"])
def test_a_notification_to_the_configured_path_moves_the_order(
    ledger: Ledger, fake_redis: redis.Redis, path: str
) -> None:
    rx = make_receiver(ledger, fake_redis, notify_url=CONFIGURED)
    trade_no = new_order(rx.ledger)
    assert_ok(post(rx, signed(notification(trade_no)), path=path))
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED
    response = rx.client.get(path)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


@pytest.mark.parametrize("path", ["/h/<int:x>", "/pay outs"])
def test_a_path_that_is_not_a_plain_rule_is_served_as_it_is(
    ledger: Ledger, fake_redis: redis.Redis, path: str
) -> None:
    rx = make_receiver(
        ledger, fake_redis, notify_url="https://h.example" + urllib.parse.quote(path)
    )
    trade_no = new_order(rx.ledger)
    assert_ok(post(rx, signed(notification(trade_no)), path=urllib.parse.quote(path)))
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED
    assert rx.client.get("/healthz").status_code == 200


def test_a_notification_to_an_unknown_path_is_counted_and_logged(
    ledger: Ledger, fake_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    rx = make_receiver(ledger, fake_redis, notify_url=CONFIGURED)
    trade_no = new_order(rx.ledger)
    with caplog.at_level(logging.WARNING, logger="worker.web.notify"):
        response = post(rx, signed(notification(trade_no)), path="/notify/other?k=v")
        assert rx.client.get("/favicon.ico").status_code == 404  # not a notification
    assert response.status_code == 404
    assert state_of(rx.ledger, trade_no) == State.PROCESSING
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "'/notify/other'" in message and "/notify/vexora" in message
    assert trade_no not in message and "k=v" not in message
    text = rx.client.get("/metrics").get_data(as_text=True)
    assert 'disburse_webhooks_total{outcome="unknown_path"} 1.0' in text


# --- redis or postgresql down, health, metrics ----------------------------------------


@pytest.fixture
def dead_ledger() -> Iterator[Ledger]:
    """A ledger on a port nothing listens on, giving up after half a second."""
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/ledger"
    with open_pool(nobody, timeout=0.5) as pool:
        yield Ledger(pool)


def test_healthz(rx: Receiver) -> None:
    response = rx.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"redis": "ok", "postgres": "ok"}


def test_healthz_with_redis_down_is_503(ledger: Ledger) -> None:
    rx = make_receiver(ledger, dead_redis())
    response = rx.client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"redis": "unreachable", "postgres": "ok"}


def test_healthz_with_postgresql_down_is_503(dead_ledger: Ledger) -> None:
    response = make_receiver(dead_ledger).client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"redis": "ok", "postgres": "unreachable"}


def test_a_verified_report_is_applied_with_redis_down(ledger: Ledger) -> None:
    """Redis holds no payout state: only the metrics of this notification are lost."""
    rx = make_receiver(ledger, dead_redis())
    trade_no = new_order(rx.ledger)
    assert_ok(post(rx, signed(notification(trade_no))))
    assert state_of(rx.ledger, trade_no) == State.SUCCEEDED


def test_notify_with_postgresql_down_is_503_so_the_provider_retries(
    dead_ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    response = post(make_receiver(dead_ledger), signed(notification("a" * 32)))
    assert (response.status_code, response.get_data()) == (503, b"unavailable")
    assert "cannot reach PostgreSQL" in caplog.text


def test_metrics_with_redis_down_is_503(ledger: Ledger) -> None:
    assert make_receiver(ledger, dead_redis()).client.get("/metrics").status_code == 503


def test_metrics_with_postgresql_down_is_503(dead_ledger: Ledger) -> None:
    assert make_receiver(dead_ledger).client.get("/metrics").status_code == 503


def test_metrics_expose_names_and_count_webhook_outcomes(rx: Receiver) -> None:
    trade_no = new_order(rx.ledger)
    post(rx, signed(notification(trade_no)))  # accepted
    post(rx, signed(notification(trade_no)))  # replayed
    post(rx, signed(notification(trade_no), secret="x"))  # forged
    post(rx, notification(trade_no))  # unsigned
    post(rx, b"garbage")  # malformed
    post(rx, signed(notification("e" * 32)))  # unknown order
    response = rx.client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for name in (
        "disburse_orders",
        "disburse_orders_finalized_total",
        "disburse_provider_responses_total",
        "disburse_submit_latency_seconds_bucket",
        "disburse_limiter_wait_seconds_total",
        "disburse_token_refreshes_total",
        "disburse_webhooks_total",
        "disburse_reconcile_lag_seconds",
    ):
        assert name in text
    for outcome in ("accepted", "replayed", "forged", "unsigned", "malformed", "unknown_order"):
        assert f'disburse_webhooks_total{{outcome="{outcome}"}} 1.0' in text
    assert 'disburse_orders{state="PROCESSING"} 0.0' in text
    assert 'disburse_orders_finalized_total{state="SUCCEEDED"} 1.0' in text


def test_each_webhook_is_counted_before_it_is_answered(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    # The process's one Metrics batches its values (for the submit workers).
    batching = Metrics(fake_redis, prefix="t", flush_every=3600)
    app = create_app(
        ledger,
        Settings(**ACCOUNT, vexora_app_secret=SECRET),
        Publisher(),
        batching,
        redis_client=fake_redis,
    )
    rx = Receiver(local_client(app), ledger, Publisher())
    assert_ok(post(rx, signed(notification(new_order(ledger)))))
    assert Metrics(fake_redis, prefix="t").snapshot() == {"webhook|accepted": "1"}


def test_importing_the_module_app_connects_to_nothing() -> None:
    import worker.web.notify

    assert worker.web.notify.app._deps is None  # type: ignore[attr-defined]


# --- fuzz ------------------------------------------------------------------------------


class Fuzz:
    """One ledger with a few orders in every interesting state, shared by the examples."""

    def __init__(self, ledger: Ledger) -> None:
        self.strict = make_receiver(ledger)
        self.lenient = make_receiver(ledger, allow_unsigned=True)
        self.trade_nos = [
            new_order(self.strict.ledger, state)
            for state in (State.QUEUED, State.PROCESSING, State.UNKNOWN, State.SUCCEEDED)
        ]
        self.states = self.snapshot()

    def snapshot(self) -> list[State]:
        return [state_of(self.strict.ledger, t) for t in self.trade_nos]


@pytest.fixture
def fuzz(ledger: Ledger) -> Fuzz:
    """Once per test: shared by its examples (the health check on that is suppressed)."""
    return Fuzz(ledger)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=2048))
def test_fuzz_random_bytes_never_500_and_never_change_state(fuzz: Fuzz, raw: bytes) -> None:
    for rx in (fuzz.strict, fuzz.lenient):
        response = rx.client.post("/notify", data=raw, content_type="application/json")
        assert response.status_code < 500
        assert fuzz.snapshot() == fuzz.states
