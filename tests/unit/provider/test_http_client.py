"""Transport failures mapped onto the error tree, and Retry-After (worker.provider.http_client)."""

from __future__ import annotations

import http.server
import threading
from email.utils import formatdate

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from worker.core.exceptions import NotSent, OutcomeUnknown
from worker.provider.http_client import (
    from_transport_error,
    never_sent,
    parse_retry_after,
    pooled_session,
)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0


def test_never_sent_reads_urllib3s_wrapping() -> None:
    refused = requests.ConnectionError(
        MaxRetryError(None, "/", reason=NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    )
    reset = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
    assert never_sent(refused)
    assert never_sent(requests.ConnectTimeout())
    assert never_sent(requests.exceptions.InvalidURL("bad"))
    assert not never_sent(reset)
    assert not never_sent(requests.ReadTimeout())
    assert not never_sent(requests.exceptions.ChunkedEncodingError())
    assert not never_sent(requests.ConnectionError("something else"))
    assert not never_sent(requests.exceptions.SSLError("mid-stream"))
    assert type(from_transport_error(refused, "x")) is NotSent
    assert type(from_transport_error(reset, "x")) is OutcomeUnknown


def test_transport_messages_name_the_call_and_the_failure_only() -> None:
    timeout = requests.ReadTimeout("HTTPConnectionPool(host='h', port=1): secret=abc")
    error = from_transport_error(timeout, "submit t1")
    assert str(error) == "submit t1: outcome unknown (read timeout after sending)"
    refused = from_transport_error(requests.ConnectTimeout("x?sign=abc"), "query t1")
    assert str(refused) == "query t1: not sent (ConnectTimeout: could not connect)"


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Stands in for an HTTP proxy: answers every request with the URL it was asked for."""

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_environments_proxy_is_read_once_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        session = pooled_session("http://provider.invalid/api")
        monkeypatch.delenv("HTTP_PROXY")  # read when the session was made, not per request
        answer = session.get("http://provider.invalid/api/v1/ping", timeout=(3, 5))
        assert answer.text == "http://provider.invalid/api/v1/ping"  # asked via the proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_no_proxy_and_a_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "provider.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/our-ca.pem")
    bypassed = pooled_session("https://provider.example/api")
    assert bypassed.proxies == {}
    assert bypassed.verify == "/etc/ssl/our-ca.pem"
    proxied = pooled_session("https://other.example/api")
    assert proxied.proxies["https"] == "http://proxy.example:3128"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert pooled_session("https://other.example/api").verify is True
