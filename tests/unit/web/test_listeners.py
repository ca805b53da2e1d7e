"""The web process's listeners (worker.web.listeners): the body limit waitress enforces with the
Procfile's own flags, and /metrics and /healthz kept off the provider's listener."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import requests
from waitress import create_server
from waitress.adjustments import Adjustments
from werkzeug.test import Client

import worker.core.logs
from tests.unit.notifications import SECRET, Publisher
from worker.coordination.metrics import Metrics
from worker.core.config import get_settings
from worker.core.settings import Settings
from worker.dev.cluster import procfile_commands
from worker.dev.redis_server import free_port
from worker.ledger import Ledger
from worker.web import listeners
from worker.web.listeners import OperationsApp, start_operations_listener, web_app
from worker.web.notify import MAX_BODY, NotifyApp, app

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = (3.05, 10.0)


def web_adjustments() -> dict[str, Any]:
    """waitress's settings as the Procfile's ``web`` line gives them."""
    command = procfile_commands((ROOT / "Procfile").read_text())["web"]
    assert command[0] == "waitress-serve"
    kw, args = Adjustments.parse_args(command[1:])
    assert kw.pop("call") is True and args == ["worker.web.listeners:web_app"]
    del kw["help"], kw["listen"]
    return kw


class Recording:
    """A WSGI app that records every request it is called for."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.calls.append(environ["PATH_INFO"])
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"OK"]


@contextmanager
def serving(wsgi: WSGIApplication) -> Iterator[str]:
    """``wsgi`` on a real waitress server with the Procfile's web settings, on a free port."""
    port = free_port()
    server = create_server(wsgi, host="127.0.0.1", port=port, **web_adjustments())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        thread.join(timeout=10)


@pytest.fixture
def web_server() -> Iterator[tuple[str, Recording]]:
    recording = Recording()
    with serving(recording) as url:
        yield url, recording


def test_the_procfile_limits_the_body_to_the_receivers_limit() -> None:
    # waitress refuses a body of max_request_body_size bytes or more.
    assert int(web_adjustments()["max_request_body_size"]) == MAX_BODY + 1


def test_a_body_over_the_limit_is_refused_by_the_server_before_the_app(
    web_server: tuple[str, Recording],
) -> None:
    url, recording = web_server
    response = requests.post(f"{url}/notify", data=b"x" * (MAX_BODY + 1), timeout=TIMEOUT)
    assert response.status_code == 413
    chunked = requests.post(
        f"{url}/notify", data=iter([b"x" * MAX_BODY, b"x"]), timeout=TIMEOUT
    )  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413
    assert recording.calls == []
    assert requests.post(f"{url}/notify", data=b"x" * MAX_BODY, timeout=TIMEOUT).ok
    assert recording.calls == ["/notify"]


# --- /metrics and /healthz ---------------------------------------------------------------


def receiver(ledger: Ledger, client: redis.Redis) -> NotifyApp:
    metrics = Metrics(client, prefix="t")
    return NotifyApp(
        ledger, Settings(vexora_app_secret=SECRET), Publisher(), metrics, redis_client=client
    )


@pytest.mark.parametrize(
    ("remote", "headers", "served"),
    [
        ("127.0.0.1", {}, True),
        ("::1", {}, True),
        ("::ffff:127.0.0.1", {}, True),
        ("203.0.113.7", {}, False),
        ("10.0.0.2", {}, False),
        ("", {}, False),  # no address: not known to be local
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.7"}, False),
        ("127.0.0.1", {"Forwarded": "for=203.0.113.7"}, False),
        ("127.0.0.1", {"X-Real-IP": "203.0.113.7"}, False),
    ],
)
def test_the_provider_listener_serves_operations_routes_only_to_direct_local_clients(
    ledger: Ledger, fake_redis: redis.Redis, remote: str, headers: dict[str, str], served: bool
) -> None:
    client = Client(receiver(ledger, fake_redis))
    for path in ("/metrics", "/healthz"):
        response = client.get(path, headers=headers, environ_base={"REMOTE_ADDR": remote})
        assert response.status_code == (200 if served else 404), path
        if not served:
            assert response.get_data() == b"not found"


def test_behind_a_proxy_the_provider_listener_refuses_operations_routes(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    """A local proxy relays every client from 127.0.0.1: its forwarding header tells them
    apart, and waitress run as the Procfile runs it passes that header on."""
    with serving(receiver(ledger, fake_redis)) as url:
        assert requests.get(f"{url}/metrics", timeout=TIMEOUT).status_code == 200
        for header in ("X-Forwarded-For", "Forwarded"):
            relayed = {header: "for=203.0.113.7" if header == "Forwarded" else "203.0.113.7"}
            for path in ("/metrics", "/healthz"):
                response = requests.get(f"{url}{path}", headers=relayed, timeout=TIMEOUT)
                assert response.status_code == 404, (header, path)


def test_the_operations_listener_serves_metrics_and_health_only(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    port = free_port()
    server = start_operations_listener(receiver(ledger, fake_redis), "127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}"
        health = requests.get(f"{url}/healthz", timeout=TIMEOUT)
        assert (health.status_code, health.json()) == (200, {"redis": "ok", "postgres": "ok"})
        metrics = requests.get(f"{url}/metrics", timeout=TIMEOUT)
        assert metrics.status_code == 200 and "disburse_webhooks_total" in metrics.text
        assert requests.post(f"{url}/notify", json={}, timeout=TIMEOUT).status_code == 404
        assert requests.get(f"{url}/notify", timeout=TIMEOUT).status_code == 404
        # Behind a proxy too: whoever reaches this listener is operations.
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        assert requests.get(f"{url}/healthz", headers=forwarded, timeout=TIMEOUT).ok
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/healthz", body=b"x" * 4096)
        assert conn.getresponse().status == 413
        conn.close()
    finally:
        server.close()
    assert Metrics(fake_redis, prefix="t").snapshot() == {}  # nothing counted as a webhook


def test_an_operations_app_wraps_the_receiver(ledger: Ledger, fake_redis: redis.Redis) -> None:
    client = Client(OperationsApp(receiver(ledger, fake_redis)))
    remote = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", environ_base=remote).status_code == 200
    assert client.post("/notify", environ_base=remote).status_code == 404


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings read afresh; web_app's logging set-up not applied to the test process."""
    monkeypatch.setattr(worker.core.logs, "configure_logging", lambda level: None)
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_web_app_starts_the_operations_listener_when_metrics_port_is_set(
    environment: pytest.MonkeyPatch,
) -> None:
    started: list[tuple[object, str, int]] = []
    environment.setattr(listeners, "start_operations_listener", lambda *args: started.append(args))
    environment.delenv("METRICS_PORT", raising=False)
    assert web_app() is app and started == []
    get_settings.cache_clear()
    environment.setenv("METRICS_PORT", "9464")
    environment.setenv("METRICS_HOST", "192.0.2.1")
    assert web_app() is app
    assert started == [(app, "192.0.2.1", 9464)]


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_a_bad_metrics_port_stops_the_web_process_with_one_line(
    environment: pytest.MonkeyPatch, value: str
) -> None:
    environment.setenv("METRICS_PORT", value)
    with pytest.raises(SystemExit) as exited:
        web_app()
    assert (
        str(exited.value)
        == f"web: configuration: METRICS_PORT={value!r} is not a TCP port (1-65535)"
    )


def test_a_metrics_port_in_use_stops_the_web_process_with_one_line(
    environment: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        environment.setenv("METRICS_PORT", str(taken.getsockname()[1]))
        with pytest.raises(SystemExit) as exited:
            web_app()
    assert str(exited.value).startswith("web: cannot listen on METRICS_HOST:METRICS_PORT")
