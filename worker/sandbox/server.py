"""The Sandbox: state, background threads and a threaded werkzeug server with keep-alive.

werkzeug 3's own ``WSGIRequestHandler.run_wsgi`` always answers ``Connection: close``
(its comment: keep-alive "isn't handled well by Python's http.server"), even with
``protocol_version`` set to HTTP/1.1, so a pooled client session opens a new TCP
connection per call. The handler here keeps the rest of werkzeug (server, environ,
threads) and replaces only ``run_wsgi``: it reads the request body fully by
``Content-Length``, always answers with a ``Content-Length``, and so can leave the
connection open for the next request (measured: ~950 vs ~630 POSTs/s from one
client session).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from worker.sandbox import chance
from worker.sandbox.app import SandboxApp
from worker.sandbox.config import SandboxConfig
from worker.sandbox.details import DetailsAPI
from worker.sandbox.payouts import PayoutAPI
from worker.sandbox.responses import DropConnection
from worker.sandbox.scheduler import Scheduler
from worker.sandbox.settlement import Settlement
from worker.sandbox.state import State
from worker.sandbox.webhooks import WebhookSender

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes; payout requests are a few hundred
# Connections the kernel holds until accepted. werkzeug's 128 overflows when hundreds of
# clients connect at once (a slow provider's worth of POSTs in flight) and the ones
# beyond wait for their SYN to be resent (measured: 500 clients at once, 250 ms each,
# all answered in 1.9 s with 128, 1.2 s with 1024).
LISTEN_BACKLOG = 1024


class Connections:
    """The open client connections of one server, so stop() can cut keep-alives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.opened = 0  # connections accepted so far: shows keep-alive at work

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.add(connection)
            self.opened += 1

    def discard(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.discard(connection)

    def shutdown_all(self) -> None:
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SandboxServer(ThreadedWSGIServer):
    """werkzeug's threaded server (a thread per connection, so a request waiting out its
    latency holds up no other) with a deeper listen backlog."""

    request_queue_size = LISTEN_BACKLOG


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 with persistent connections; closes only when asked or on trouble."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave as separate writes
    timeout = 120  # seconds an idle keep-alive connection may stay open

    def setup(self) -> None:
        super().setup()
        registry = getattr(self.server, "sandbox_connections", None)
        if registry is not None:
            registry.add(self.connection)

    def finish(self) -> None:
        registry = getattr(self.server, "sandbox_connections", None)
        if registry is not None:
            registry.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # hundreds of requests a second: no access log

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("sandbox http: " + format, *args)

    def _plain(self, code: int, text: str) -> None:
        payload = text.encode()
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.environ = self.make_environ()
        if environ.get("wsgi.input_terminated"):  # chunked request body
            body = environ["wsgi.input"].read(MAX_BODY + 1)
            self.close_connection = True  # do not trust what is left on the wire
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._plain(413 if length > MAX_BODY else 400, "bad Content-Length")
                return
            body = self.rfile.read(length) if length else b""
        if len(body) > MAX_BODY:
            self._plain(413, "request body too large")
            return
        environ.pop("wsgi.input_terminated", None)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))

        started: list[Any] = []
        written: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started[:] = [status, headers]
            return written.append

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks = [*written, *result]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except DropConnection:
            # Accept-then-hang: no answer at all, just a closed connection.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:
            log.exception("sandbox: error handling %s %s", self.command, self.path)
            self._plain(500, "Internal Server Error")
            return

        status, headers = started
        payload = b"".join(chunks)
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for key, value in headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - only the printed URL
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Sandbox:
    """The provider simulator: ``Sandbox(config).start()`` serves it on a free port."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.state = State()
        self._nonce = chance.new_nonce()
        self._stopping = threading.Event()
        self._scheduler = Scheduler()
        self._webhooks = WebhookSender(self.config, self.state, self._scheduler)
        self._settlement = Settlement(self.state, self._scheduler, self._webhooks)
        self._latency = chance.Latency(self.config, self._nonce)
        self.payout_api = PayoutAPI(
            self.config, self.state, self._settlement, self._nonce, self._pause, self._latency.draw
        )
        self.details_api = DetailsAPI(self.config, self.state, self._pause, self._latency.draw)
        self.app = SandboxApp(self.payout_api, self.details_api, self)
        self.url = ""
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections = Connections()

    def _pause(self, seconds: float) -> None:
        """Sleep that ``stop()`` interrupts (latency, hangs)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    # --- serving ------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Sandbox:
        """Serve in a background thread (``port=0``: a free port); returns self."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already serving at " + self.url)
        self._stopping.clear()
        self._scheduler.reopen()
        self._webhooks.reopen()
        try:
            server = SandboxServer(host, port, self.app, handler=KeepAliveHandler)
        except SystemExit as exc:  # werkzeug exits on bind errors; a library must not
            raise OSError(f"sandbox cannot listen on {host}:{port}") from exc
        server.sandbox_connections = self._connections  # type: ignore[attr-defined]
        self._server = server
        self.url = f"http://{_display_host(host)}:{server.port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="sandbox-http",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._server.port if self._server is not None else 0

    def stop(self) -> None:
        """Stop serving (open keep-alive connections are cut) and the background threads."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            self._connections.shutdown_all()
            server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self._scheduler.stop()
        self._webhooks.stop()

    def __enter__(self) -> Sandbox:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- control and introspection ------------------------------------------------------

    def configure(self, **knobs: Any) -> None:
        """Change knobs at runtime (all or nothing; SandboxConfigError on a bad one)."""
        self.config.update(knobs)

    def reset(self) -> None:
        """Forget every payout, token, counter and pending settlement or webhook."""
        self.state.reset()
        self._scheduler.clear()

    def settle_now(self) -> int:
        """Settle every processing payout immediately; returns how many."""
        return self._settlement.settle_all()

    def reverse(self, trade_no: str, *, webhook: bool = True) -> bool:
        """The succeeded payout ``trade_no`` fails after all (a reversal), told by a webhook
        unless ``webhook`` is False; False if it had not succeeded."""
        reversed_payout = self.state.reverse(trade_no, time.time())
        if reversed_payout is None:
            return False
        if webhook:
            self._webhooks.payout_settled(reversed_payout, self.state.generation)
        return True

    def payouts(self) -> dict[str, dict[str, Any]]:
        return self.state.payouts()

    def stats(self) -> dict[str, Any]:
        stats = self.state.stats()
        stats["http_connections"] = self._connections.opened
        return stats
