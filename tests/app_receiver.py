"""The application's end of the webhooks, for the tests: a real HTTP server on a free port
that checks every request with ``worker.verify_webhook`` (400 when it fails), answers as
the test tells it, and records what it acknowledged."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

import worker

# What to answer to one verified event: an HTTP status, or DROP (close the connection
# without an answer); the answer may take its time.
DROP = 0
Answer = Callable[[dict[str, Any]], int]


class AppReceiver:
    def __init__(self, secret: str, *, answer: Answer | None = None) -> None:
        self.secret = secret
        self.answer: Answer = answer or (lambda _event: 200)
        self.clock_offset = 0.0  # seconds added to the receiver's clock
        self.acked: list[dict[str, Any]] = []  # events answered 2xx, in arrival order
        self.arrived = 0  # verified requests, whatever the answer
        self.refused = 0  # requests whose signature did not verify
        self.last_request: tuple[bytes, str] | None = None  # (body, signature header)
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hooks/disburse"

    def __enter__(self) -> AppReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        header = request.headers.get("Disburse-Signature", "")
        now = time.time() + self.clock_offset
        if not worker.verify_webhook(body, header, self.secret, now=now):
            with self._lock:
                self.refused += 1
            return Response("bad signature", status=400)(environ, start_response)
        event = json.loads(body)
        with self._lock:
            self.arrived += 1
            self.last_request = (body, header)
        status = self.answer(event)
        if status == DROP:
            connection = environ.get("werkzeug.socket")
            if isinstance(connection, socket.socket):
                connection.shutdown(socket.SHUT_RDWR)
            return Response("", status=500)(environ, start_response)
        if 200 <= status < 300:
            with self._lock:
                self.acked.append(event)
        return Response("", status=status)(environ, start_response)

    def states(self) -> dict[str, list[str]]:
        """Each payout's states as acknowledged, an event id counted once, in arrival order."""
        seen: set[str] = set()
        found: dict[str, list[str]] = {}
        with self._lock:
            events = list(self.acked)
        for event in events:
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            if not event["type"].startswith("payout."):
                continue  # a batch's event (batch.held, ...): no payout's state
            found.setdefault(event["data"]["trade_no"], []).append(event["data"]["state"])
        return found

    def post(self, body: bytes, header: str) -> int:
        """POST a request as the sender would (to replay or tamper with one); the status."""
        import requests

        response = requests.post(
            self.url,
            data=body,
            headers={"Disburse-Signature": header, "Content-Type": "application/json"},
            timeout=5,
        )
        return response.status_code
