"""A fake provider API on a real local port (werkzeug), for the payout client, the details
client and the token fetch: it records every request and answers as scripted."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

API_KEY = "b3ed7d4b-a96c-6c08-b3c7-12c3124242d9"
CLIENT_ID = "client-1"
CLIENT_SECRET = "very-secret"
ACCOUNT = "acct-9"


@dataclass
class Seen:
    method: str
    path: str
    args: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw_uri: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeProvider:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: list[Response] = field(default_factory=list)
    handler: Callable[[Seen], Response] | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        seen = Seen(
            request.method,
            request.path,
            dict(request.args),
            dict(request.headers),
            request.get_data(),
            environ.get("REQUEST_URI") or environ.get("RAW_URI", ""),
        )
        self.seen.append(seen)
        if self.handler is not None:
            response = self.handler(seen)
        elif self.replies:
            response = self.replies.pop(0)
        else:
            response = Response("no reply scripted", status=599)
        return response(environ, start_response)

    def reply(
        self, body: Any = None, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.replies.append(json_response(body, status, headers))

    def pages_requested(self) -> list[int]:
        return [int(s.args["page"]) for s in self.seen if s.method == "GET"]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = body if isinstance(body, str | bytes) else json.dumps(body)
    return Response(text, status=status, headers=headers, content_type="application/json")


@contextmanager
def serving() -> Iterator[FakeProvider]:
    """A :class:`FakeProvider` listening on a free local port until the block ends."""
    fake = FakeProvider()
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


class SpySession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(kwargs)
        return super().send(request, **kwargs)


def error(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "success": False,
        "error": {"code": status, "message": message, **extra},
    }
