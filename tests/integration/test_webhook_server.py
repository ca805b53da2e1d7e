"""The REAL web process (the Procfile's ``web`` line: waitress serving worker.web.listeners:web_app)
against the session's private Redis and ledger database, over real HTTP."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from schemas import Payout
from tests import ledger_reads
from worker.core.signing import sign
from worker.core.states import State
from worker.dev.redis_server import RedisServer, free_port
from worker.ledger import Ledger, new_batch_id

pytestmark = pytest.mark.integration

SECRET = "integration-webhook-secret"
# AR's own provider account (the ``web`` fixture's): its secret vouches for AR's orders only.
AR_SECRET = "integration-ar-secret"
# Behind a proxy that forwards the public path as it is: served besides /notify.
NOTIFY_URL = "https://payouts.example.com/notify/vexora"
PREFIX = "disburse"
PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"
TIMEOUT = (3.05, 10.0)


@dataclass
class WebServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def post(self, body: Any, path: str = "/notify", **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        return requests.post(
            f"{self.url}{path}", data=data, headers=headers, timeout=TIMEOUT, **kwargs
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def web_command(port: int) -> list[str]:
    """The Procfile's ``web`` line, with ${PORT:-...} expanded and the venv's binary."""
    for line in PROCFILE.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == "web":
            parts = [re.sub(r"\$\{PORT(:-[^}]*)?\}", str(port), p) for p in shlex.split(command)]
            assert parts[0] == "waitress-serve"
            parts[0] = str(Path(sys.executable).with_name("waitress-serve"))
            assert parts[-2:] == ["--call", "worker.web.listeners:web_app"]
            return parts
    raise AssertionError("no web line in the Procfile")


def start_web(redis_url: str, database_url: str, tmp: Path, **env: str) -> WebServer:
    assert not redis_url.endswith(":6379/0") and ":5432/" not in database_url
    port = free_port()
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VEXORA_", "DETAILS_", "DISBURSE_", "ALLOW_UNSIGNED", "CELERY_"))
    }
    environ.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        # A complete provider account (no setting has a built-in value); the web
        # process never calls it, so its URL names no server.
        VEXORA_BASE_URL="http://127.0.0.1:9",
        VEXORA_MERCHANT_NO="M-INTEGRATION",
        VEXORA_APP_SECRET=SECRET,
        DISBURSE_KEY_PREFIX=PREFIX,
        PORT=str(port),
        PYTHONUNBUFFERED="1",
        **env,
    )
    log = tmp / f"web-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            web_command(port),
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROCFILE.parent,
            start_new_session=True,
        )
    server = WebServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"web process exited ({process.returncode}):\n{server.output()}")
        try:
            if requests.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_web(server)
            raise RuntimeError(f"web process did not become healthy:\n{server.output()}")
        time.sleep(0.1)


def stop_web(server: WebServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="module")
def web(
    redis_server: RedisServer, ledger_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    redis_server.client().flushdb()
    server = start_web(
        redis_server.url,
        ledger_url,
        tmp_path_factory.mktemp("web"),
        NOTIFY_URL=NOTIFY_URL,
        VEXORA_AR_MERCHANT_NO="M-AR",
        VEXORA_AR_APP_SECRET=AR_SECRET,
        METRICS_PORT=str(free_port()),
    )
    try:
        yield server
    finally:
        stop_web(server)


@pytest.fixture(scope="module")
def lenient_web(
    redis_server: RedisServer, ledger_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    server = start_web(
        redis_server.url,
        ledger_url,
        tmp_path_factory.mktemp("web-lenient"),
        ALLOW_UNSIGNED_WEBHOOKS="1",
    )
    try:
        yield server
    finally:
        stop_web(server)


def new_order(ledger: Ledger, *path: State, market: str = "ID") -> str:
    """An order on the web process's ledger (the ``ledger`` fixture's), brought along ``path``."""
    fields = {"amount": "100000", "bankAccountNo": "5464438554636", "bankCode": "0002"}
    payout = Payout(market, "IDR" if market == "ID" else "ARS", Decimal("100000"), None, fields)
    ((trade_no, _),) = ledger.create_orders([payout], batch_id=new_batch_id(), market=market)
    for target in path or (State.SUBMITTING, State.PROCESSING):
        assert ledger.transition(trade_no, target, source="submit").moved
    return trade_no


def notification(trade_no: str, status: str = "0000", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "platFormTradeNo": "PT-777000111",
        "tradeNo": trade_no,
        "amount": "100000",
        "status": status,
        "message": "success",
        "timestamp": str(int(time.time() * 1000)),
    }
    body.update(extra)
    return body


def signed(body: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
    return {**body, "sign": sign(body, secret)}


def state_of(ledger: Ledger, trade_no: str) -> State:
    order = ledger.get(trade_no)
    assert order is not None
    return order.state


def assert_ok(response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.text == "OK"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_valid_notifications_move_orders(web: WebServer, ledger: Ledger) -> None:
    paid, failed = new_order(ledger), new_order(ledger)
    assert_ok(web.post(signed(notification(paid, "0000"))))
    assert_ok(web.post(signed(notification(failed, "00029", message="REJECTED_TRANSACTION"))))
    order = ledger.get(paid)
    assert order is not None
    assert (order.state, order.platform_trade_no, order.provider_status) == (
        State.SUCCEEDED, "PT-777000111", "0000",
    )  # fmt: skip
    order = ledger.get(failed)
    assert order is not None
    assert (order.state, order.provider_message) == (State.FAILED, "REJECTED_TRANSACTION")


def test_the_path_of_notify_url_is_served_and_others_are_counted(
    web: WebServer, ledger: Ledger
) -> None:
    trade_no = new_order(ledger)
    missed = web.post(signed(notification(trade_no)), path="/notify/vexor")
    assert missed.status_code == 404 and state_of(ledger, trade_no) == State.PROCESSING
    assert_ok(web.post(signed(notification(trade_no)), path="/notify/vexora"))
    assert state_of(ledger, trade_no) == State.SUCCEEDED
    text = requests.get(f"{web.url}/metrics", timeout=TIMEOUT).text
    assert re.search(r'^disburse_webhooks_total\{outcome="unknown_path"\} [1-9]', text, re.M)
    records = [json.loads(line) for line in web.output().splitlines() if line.startswith("{")]
    refused = [r for r in records if "'/notify/vexor'" in r["message"]]
    assert [r["level"] for r in refused] == ["WARNING"]


def test_processing_then_final(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger, State.SUBMITTING, State.UNKNOWN)
    assert_ok(web.post(signed(notification(trade_no, "0015"))))
    assert state_of(ledger, trade_no) == State.PROCESSING
    assert_ok(web.post(signed(notification(trade_no, "0000"))))
    assert state_of(ledger, trade_no) == State.SUCCEEDED


def test_forged_and_tampered_are_refused(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger)
    history = ledger_reads.history(ledger, trade_no)
    assert web.post(signed(notification(trade_no), secret="guess")).status_code == 401
    tampered = signed(notification(trade_no, "00029"))
    tampered["status"] = "0000"
    assert web.post(tampered).status_code == 401
    tampered = signed(notification(trade_no))
    tampered["amount"] = "999999999"
    assert web.post(tampered).status_code == 401
    assert state_of(ledger, trade_no) == State.PROCESSING
    assert ledger_reads.history(ledger, trade_no) == history


def test_unsigned_is_refused_by_default(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger)
    response = web.post(notification(trade_no))
    assert response.status_code == 401
    assert state_of(ledger, trade_no) == State.PROCESSING


def test_unsigned_when_allowed_only_queues_a_lookup(
    lenient_web: WebServer, ledger: Ledger, real_redis: redis.Redis
) -> None:
    trade_no = new_order(ledger)
    assert_ok(lenient_web.post(notification(trade_no, "0000")))
    assert state_of(ledger, trade_no) == State.PROCESSING
    # The lookup is a real Celery message on the broker (this Redis), carrying the
    # tradeNo only: nothing else from the unauthenticated body.
    messages = [json.loads(m) for m in real_redis.lrange("reconcile", 0, -1)]
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == "disburse.lookup"
    assert trade_no in json.dumps(messages[0])
    assert "PT-777000111" not in json.dumps(messages[0])


def test_replays_are_ok_and_change_nothing(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger)
    body = signed(notification(trade_no))
    assert_ok(web.post(body))
    history = ledger_reads.history(ledger, trade_no)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: web.post(body), range(16)))
    for response in responses:
        assert_ok(response)
    order = ledger.get(trade_no)
    assert order is not None
    assert (order.state, order.discrepancy) == (State.SUCCEEDED, None)
    assert ledger_reads.history(ledger, trade_no) == history


def test_concurrent_first_deliveries_move_once(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger)
    body = signed(notification(trade_no))
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: web.post(body), range(8)))
    for response in responses:
        assert_ok(response)
    assert [h for _, h in ledger_reads.history(ledger, trade_no)].count("SUCCEEDED webhook") == 1


def test_contradicting_a_final_state_is_recorded_not_applied(
    web: WebServer, ledger: Ledger
) -> None:
    trade_no = new_order(ledger, State.SUBMITTING, State.PROCESSING, State.SUCCEEDED)
    assert_ok(web.post(signed(notification(trade_no, "00029"))))
    order = ledger.get(trade_no)
    assert order is not None
    assert order.state == State.SUCCEEDED
    assert order.discrepancy == "FAILED webhook"
    assert ledger_reads.discrepancies(ledger) == [trade_no]


def test_unknown_trade_no_is_ok(web: WebServer, ledger: Ledger) -> None:
    assert_ok(web.post(signed(notification("ab" * 16))))
    assert ledger.get("ab" * 16) is None


def test_malformed_and_oversized_are_refused(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger)
    assert web.post(b"{not json").status_code == 400
    assert web.post(b"[1, 2, 3]").status_code == 400
    assert web.post(b"").status_code == 400
    missing = notification(trade_no)
    del missing["status"]
    assert web.post(signed(missing)).status_code == 400
    big = signed(notification(trade_no, padding="x" * 200_000))
    refused = web.post(big)
    # waitress's own answer: the server refused the body before the app was called.
    assert (refused.status_code, "waitress" in refused.text) == (413, True)
    assert requests.get(f"{web.url}/notify", timeout=TIMEOUT).status_code == 405
    assert state_of(ledger, trade_no) == State.PROCESSING


def test_chunked_body_is_accepted(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger)
    data = json.dumps(signed(notification(trade_no))).encode()
    chunks = iter([data[:10], data[10:]])
    response = requests.post(
        f"{web.url}/notify",
        data=chunks,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert_ok(response)
    assert state_of(ledger, trade_no) == State.SUCCEEDED


def test_healthz_and_metrics(web: WebServer, ledger: Ledger) -> None:
    response = requests.get(f"{web.url}/healthz", timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (200, {"redis": "ok", "postgres": "ok"})
    trade_no = new_order(ledger)
    assert_ok(web.post(signed(notification(trade_no))))
    assert web.post(signed(notification(trade_no), secret="nope")).status_code == 401
    text = requests.get(f"{web.url}/metrics", timeout=TIMEOUT).text
    assert re.search(r'^disburse_webhooks_total\{outcome="accepted"\} [1-9]', text, re.M)
    assert re.search(r'^disburse_webhooks_total\{outcome="forged"\} [1-9]', text, re.M)
    # Counted by the web process as its ledger makes orders final.
    assert re.search(r'^disburse_orders_finalized_total\{state="SUCCEEDED"\} [1-9]', text, re.M)
    assert 'disburse_orders{state="PROCESSING"} 0.0' in text
    assert "disburse_reconcile_lag_seconds" in text


def test_web_logs_are_masked_json_lines(web: WebServer, ledger: Ledger) -> None:
    trade_no = new_order(ledger)
    assert_ok(web.post(signed(notification(trade_no, message="acct 5464438554636"))))
    assert web.post(signed(notification(trade_no), secret="x")).status_code == 401
    time.sleep(0.2)
    output = web.output()
    assert "5464438554636" not in output
    assert SECRET not in output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(r.get("trade_no") == trade_no for r in records)
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)


def test_each_account_secret_vouches_for_its_own_markets_orders_only(
    web: WebServer, ledger: Ledger
) -> None:
    ours, theirs = new_order(ledger), new_order(ledger, market="AR")
    history = ledger_reads.history(ledger, ours)
    refused = web.post(signed(notification(ours), secret=AR_SECRET))
    assert (refused.status_code, refused.text) == (401, "bad signature")
    assert web.post(signed(notification(theirs), secret=SECRET)).status_code == 401
    assert (state_of(ledger, ours), state_of(ledger, theirs)) == (State.PROCESSING,) * 2
    assert ledger_reads.history(ledger, ours) == history
    assert_ok(web.post(signed(notification(theirs), secret=AR_SECRET)))
    assert_ok(web.post(signed(notification(ours))))
    assert (state_of(ledger, ours), state_of(ledger, theirs)) == (State.SUCCEEDED,) * 2
    text = requests.get(f"{web.url}/metrics", timeout=TIMEOUT).text
    assert re.search(r'^disburse_webhooks_total\{outcome="wrong_account"\} [2-9]', text, re.M)
    assert AR_SECRET not in web.output()


def test_metrics_and_health_on_their_own_listener(web: WebServer) -> None:
    port = re.search(r"/metrics and /healthz are served on 127\.0\.0\.1:(\d+)", web.output())
    assert port is not None, web.output()
    operations = f"http://127.0.0.1:{port.group(1)}"
    health = requests.get(f"{operations}/healthz", timeout=TIMEOUT)
    assert (health.status_code, health.json()) == (200, {"redis": "ok", "postgres": "ok"})
    assert "disburse_webhooks_total" in requests.get(f"{operations}/metrics", timeout=TIMEOUT).text
    assert requests.post(f"{operations}/notify", json={}, timeout=TIMEOUT).status_code == 404
    # The provider's listener: not to a client relayed by a proxy.
    relayed = {"X-Forwarded-For": "203.0.113.7"}
    for path in ("/metrics", "/healthz"):
        assert requests.get(f"{web.url}{path}", headers=relayed, timeout=TIMEOUT).status_code == 404
