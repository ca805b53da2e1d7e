"""Response helpers: the payout API's two-layer JSON, the details API's status JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from werkzeug.wrappers import Request, Response

from worker.sandbox.protocol import ACCEPTED


class DropConnection(ConnectionAbortedError):
    """Raised by the app to close the connection without sending any answer."""


def now_ms() -> int:
    return int(time.time() * 1000)


def ms_text(seconds: float) -> str:
    return str(int(seconds * 1000))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def json_body(request: Request) -> Any:
    """The parsed JSON body, or None when it is not JSON at all."""
    try:
        return json.loads(request.get_data(cache=False) or b"null")
    except ValueError:
        return None


def vexora_ok(data: dict[str, Any]) -> Response:
    return json_response(
        {"msg": "success", "code": ACCEPTED, "timestamp": now_ms(), "success": True, "data": data}
    )


def vexora_error(code: str, message: str, http_status: int = 200) -> Response:
    return json_response(
        {"msg": message, "code": code, "success": False, "timestamp": now_ms(), "data": None},
        status=http_status,
    )


def details_error(status: int, message: str, errors: dict[str, Any] | None = None) -> Response:
    error: dict[str, Any] = {"code": status, "message": message}
    if errors:
        error["errors"] = errors
    return json_response({"status": status, "success": False, "error": error}, status=status)
