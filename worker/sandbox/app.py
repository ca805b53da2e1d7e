"""The WSGI app: routes of both provider APIs plus the ``/_sandbox/`` introspection."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from worker.sandbox.config import SandboxConfig, SandboxConfigError
from worker.sandbox.details import DetailsAPI
from worker.sandbox.payouts import PayoutAPI
from worker.sandbox.responses import details_error, json_body, json_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_MARKET = "<any(id,ar,jp,kh,ID,AR,JP,KH):market>"
_PAYOUT_ENDPOINTS = {
    "disbursements": "disburse",
    "queryPayOutResult": "query",
    "queryBalance": "balance",
}


def _rules() -> list[Rule]:
    rules: list[Rule] = []
    for path, endpoint in _PAYOUT_ENDPOINTS.items():
        rules.append(Rule(f"/v1/vexora/{path}", endpoint=endpoint, methods=["POST"]))
        rules.append(Rule(f"/{_MARKET}/v1/vexora/{path}", endpoint=endpoint, methods=["POST"]))
    rules += [
        Rule("/api/v1.0/access-token/b2b", endpoint="token", methods=["POST"]),
        Rule(
            "/api/v1.0/disbursements/<account_id>/<transaction_id>",
            endpoint="details",
            methods=["GET"],
        ),
        Rule(
            "/api/v1.0/disbursement/<account_id>/<transaction_id>",
            endpoint="details",
            methods=["GET"],
        ),
        Rule("/api/v1.0/disbursement/<account_id>", endpoint="listing", methods=["GET"]),
        Rule("/api/v1.0/disbursements/<account_id>", endpoint="listing", methods=["GET"]),
        Rule("/_sandbox/health", endpoint="health", methods=["GET"]),
        Rule("/_sandbox/payouts", endpoint="payouts", methods=["GET"]),
        Rule("/_sandbox/stats", endpoint="stats", methods=["GET"]),
        Rule("/_sandbox/config", endpoint="get_config", methods=["GET"]),
        Rule("/_sandbox/config", endpoint="set_config", methods=["POST"]),
        Rule("/_sandbox/reset", endpoint="reset", methods=["POST"]),
        Rule("/_sandbox/settle", endpoint="settle", methods=["POST"]),
        Rule("/_sandbox/reverse", endpoint="reverse", methods=["POST"]),
    ]
    return rules


class Controls(Protocol):
    """What the ``/_sandbox/`` endpoints show and change (the Sandbox provides it)."""

    @property
    def config(self) -> SandboxConfig: ...

    def configure(self, **knobs: Any) -> None: ...

    def reset(self) -> None: ...

    def settle_now(self) -> int: ...

    def reverse(self, trade_no: str, *, webhook: bool = True) -> bool: ...

    def payouts(self) -> dict[str, dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...


class SandboxApp:
    """WSGI callable; usable with ``werkzeug.test.Client`` without starting a server."""

    def __init__(self, payouts: PayoutAPI, details: DetailsAPI, controls: Controls) -> None:
        self._controls = controls
        self.url_map = Map(_rules())
        self._endpoints: dict[str, Callable[..., Response]] = {
            "disburse": payouts.disburse,
            "query": payouts.query,
            "balance": payouts.balance,
            "token": details.token,
            "details": details.details,
            "listing": details.listing,
            "health": self._health,
            "payouts": self._payouts,
            "stats": self._stats,
            "get_config": self._get_config,
            "set_config": self._set_config,
            "reset": self._reset,
            "settle": self._settle,
            "reverse": self._reverse,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            response = details_error(404, "Not found")
        except MethodNotAllowed as exc:
            response = details_error(405, "Method not allowed")
            response.headers["Allow"] = ", ".join(exc.valid_methods or ())
        except HTTPException as exc:  # pragma: no cover - e.g. a redirect rule
            return exc(environ, start_response)
        else:
            response = self._endpoints[endpoint](request, **args)
        return response(environ, start_response)

    # --- introspection ------------------------------------------------------------------

    def _health(self, request: Request) -> Response:
        return json_response({"ok": True})

    def _payouts(self, request: Request) -> Response:
        return json_response(self._controls.payouts())

    def _stats(self, request: Request) -> Response:
        return json_response(self._controls.stats())

    def _get_config(self, request: Request) -> Response:
        return json_response(self._controls.config.as_dict())

    def _set_config(self, request: Request) -> Response:
        knobs: Any = json_body(request)
        if not isinstance(knobs, dict):
            return details_error(400, "expected a JSON object of knob -> value")
        try:
            self._controls.configure(**knobs)
        except SandboxConfigError as exc:
            return details_error(400, str(exc))
        return json_response(self._controls.config.as_dict())

    def _reset(self, request: Request) -> Response:
        self._controls.reset()
        return json_response({"ok": True})

    def _settle(self, request: Request) -> Response:
        return json_response({"settled": self._controls.settle_now()})

    def _reverse(self, request: Request) -> Response:
        """``{"tradeNo": ..., "webhook": true}``: that succeeded payout fails after all."""
        body: Any = json_body(request)
        trade_no = body.get("tradeNo") if isinstance(body, dict) else None
        webhook = body.get("webhook", True) if isinstance(body, dict) else True
        if not isinstance(trade_no, str) or not isinstance(webhook, bool):
            return details_error(400, 'expected {"tradeNo": "...", "webhook": true|false}')
        if not self._controls.reverse(trade_no, webhook=webhook):
            return details_error(409, f"no succeeded payout with tradeNo {trade_no!r}")
        return json_response({"reversed": trade_no})
