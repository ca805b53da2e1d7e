"""The webhook receiver: a WSGI app (werkzeug) served by waitress (Procfile ``web``).

Routes:

``POST <the path of NOTIFY_URL>`` and ``POST /notify``
    The provider's asynchronous notification (PROVIDERS.md), sent to the ``notifyUrl``
    of each payout, which is ``NOTIFY_URL`` unless the row gives its own: a JSON object with
    ``platFormTradeNo, tradeNo, amount, status, message/remark, timestamp, sign``. The
    ``sign`` is verified (constant time) before anything touches state. A verified
    notification moves the order with one ledger transition marked as a provider
    report, so replays are harmless (``same``/``final``) and a report that contradicts
    a final state is recorded as a discrepancy, never applied. Accepted notifications
    are answered with exactly ``OK`` (text/plain), fast: no provider call is made here.

    Unsigned notifications are refused (401) unless ``ALLOW_UNSIGNED_WEBHOOKS`` is on;
    then they only publish an immediate lookup of the order, which asks the provider,
    and never set a state themselves.

    Malformed input is a 4xx, never a 500: bad JSON or not an object 400, over
    ``MAX_BODY`` 413, wrong method 405, a signed body without tradeNo/status 400. Redis
    (or the broker) down is a 503, which the provider retries. A POST to a path
    nothing is served on is a 404, logged (the path only) and counted (outcome
    ``unknown_path``): notifications refused unnoticed leave payouts to reconcile alone.

``GET /healthz``
    ``{"redis": "ok"}`` (200) or ``{"redis": "unreachable"}`` (503).

``GET /metrics``
    Prometheus text of the cluster-wide metrics (:mod:`worker.metrics`).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from worker.metrics import Metrics
from worker.signing import SIGN_FIELD, verify
from worker.states import FINAL_STATES, Outcome
from worker.vexora import PAYOUT_STATES, ProviderReport, is_trade_no

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from worker.config import Settings
    from worker.ledger import Ledger

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
OK = "OK"
_MAX_FACT = 64
NOTIFY_PATH = "/notify"
_MAX_LOGGED_PATH = 200

PublishLookups = Callable[[Sequence[str]], Any]


class Unavailable(Exception):
    """Redis or the broker cannot be reached: answer 503 so the provider retries."""


@dataclass(frozen=True)
class _Deps:
    ledger: Ledger
    settings: Settings
    publish_lookups: PublishLookups
    metrics: Metrics
    registry: CollectorRegistry
    notify_paths: tuple[str, ...]


def notify_paths(notify_url: str) -> tuple[str, ...]:
    """The paths notifications are served on: the path of ``notify_url``, and ``/notify``."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(notify_url).path) or "/"
    return tuple(dict.fromkeys((path, NOTIFY_PATH)))


def _text(value: Any) -> str | None:
    """A top-level field as text: strings as they are, numbers tolerated, others None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _fact(value: Any) -> str | None:
    text = _text(value)
    return text[:_MAX_FACT] if text else None


class NotifyApp:
    """The WSGI app. Dependencies are resolved on the first request, not at import."""

    # The notification paths are matched in ``_endpoint``, not here: they come from
    # NOTIFY_URL, and a werkzeug rule would read ``<...>`` in them as a variable.
    url_map = Map(
        [
            Rule("/healthz", endpoint="healthz", methods=["GET"]),
            Rule("/metrics", endpoint="metrics", methods=["GET"]),
        ]
    )

    def __init__(
        self,
        ledger: Ledger | None = None,
        settings: Settings | None = None,
        publish_lookups: PublishLookups | None = None,
        metrics: Metrics | None = None,
        *,
        configure_logs: bool = False,
    ) -> None:
        self._given = (ledger, settings, publish_lookups, metrics)
        self._configure_logs = configure_logs
        self._deps: _Deps | None = None
        self._lock = threading.Lock()

    # dependencies -------------------------------------------------------------------
    @property
    def deps(self) -> _Deps:
        if self._deps is None:
            with self._lock:
                if self._deps is None:
                    self._deps = self._resolve()
        return self._deps

    def _resolve(self) -> _Deps:
        from worker import runtime

        ledger, settings, publish_lookups, metrics = self._given
        if self._configure_logs:
            from worker.logs import configure_logging

            configure_logging("INFO")
        if settings is None:
            from worker.config import get_settings

            settings = get_settings()
        if ledger is None:
            ledger = runtime.ledger()
        if publish_lookups is None:
            # Marked as outstanding, so a reconcile pass does not ask twice.
            publish_lookups = runtime.reconciler().request_lookups
        metrics = metrics or Metrics(ledger.redis, prefix=ledger.prefix)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.collector(ledger))
        paths = notify_paths(settings.notify_url)
        log.info("webhook receiver: notifications are served on %s", ", ".join(paths))
        return _Deps(ledger, settings, publish_lookups, metrics, registry, paths)

    # WSGI ---------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        try:
            handler = {
                "notify": self.notify,
                "healthz": self.healthz,
                "metrics": self.metrics,
            }[self._endpoint(request)]
            return handler(request)
        except MethodNotAllowed as exc:
            allow = ", ".join(exc.valid_methods or ())
            return _plain(405, "method not allowed", headers={"Allow": allow})
        except NotFound:
            if request.method == "POST":
                self._unknown_path(request)
            return _plain(404, "not found")
        except HTTPException as exc:
            return _plain(exc.code or 400, exc.name)
        except (Unavailable, redis.RedisError) as exc:
            log.error("webhook receiver cannot reach Redis or the broker: %s", exc)
            return _plain(503, "unavailable")
        except Exception:
            log.exception("webhook receiver failed")
            return _plain(500, "error")

    def _endpoint(self, request: Request) -> str:
        if request.path in self.deps.notify_paths:
            if request.method != "POST":
                raise MethodNotAllowed(valid_methods=["POST"])
            return "notify"
        endpoint, _ = self.url_map.bind_to_environ(request.environ).match()
        return str(endpoint)

    def _unknown_path(self, request: Request) -> None:
        """A notification sent where none is served, e.g. a proxy rewrote NOTIFY_URL's path."""
        deps = self.deps
        deps.metrics.webhook("unknown_path")
        log.warning(
            "webhook refused: POST to %r, notifications are served on %s",
            request.path[:_MAX_LOGGED_PATH],
            ", ".join(deps.notify_paths),
        )

    # /healthz -----------------------------------------------------------------------
    def healthz(self, request: Request) -> Response:
        client = self.deps.ledger.redis
        try:
            client.ping()
        except Exception as exc:
            log.warning("health check: Redis unreachable (%s)", type(exc).__name__)
            return _json(503, {"redis": "unreachable"})
        return _json(200, {"redis": "ok"})

    # /metrics -----------------------------------------------------------------------
    def metrics(self, request: Request) -> Response:
        body = generate_latest(self.deps.registry)
        return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)

    # /notify ------------------------------------------------------------------------
    def notify(self, request: Request) -> Response:
        deps = self.deps
        body, error = _read_body(request)
        if error is not None:
            deps.metrics.webhook(error.outcome)
            log.warning("webhook refused: %s", error.reason)
            return _plain(error.status, error.reason)
        assert body is not None

        given = body.get(SIGN_FIELD)
        if given is None or given == "":
            return self._unsigned(body, deps)
        # Each provider account signs with its own secret; any of ours is the provider.
        if not any(verify(body, account.app_secret) for account in deps.settings.accounts):
            deps.metrics.webhook("forged")
            log.warning(
                "webhook refused: signature does not verify",
                extra={"trade_no": _safe_trade_no(body.get("tradeNo"))},
            )
            return _plain(401, "bad signature")

        trade_no = _text(body.get("tradeNo"))
        status = _text(body.get("status"))
        if not trade_no or not status:
            deps.metrics.webhook("malformed")
            log.warning("webhook refused: signed, but tradeNo or status missing")
            return _plain(400, "tradeNo and status are required")
        if not is_trade_no(trade_no):
            deps.metrics.webhook("unknown_order")
            log.warning("webhook for a tradeNo that cannot be ours: %r", trade_no[:40])
            return _ok()

        state = PAYOUT_STATES.get(status)
        if state is None:
            return self._unknown_status(trade_no, status, deps)

        message = _fact(body.get("message")) or _fact(body.get("remark"))
        report = ProviderReport(
            state, _fact(body.get("platFormTradeNo")), status[:_MAX_FACT], message or ""
        )
        outcome = deps.ledger.apply_report(trade_no, report, source="webhook")
        extra = {"trade_no": trade_no}
        if outcome is not Outcome.MISSING:
            self._check_amount(trade_no, body.get("amount"), deps)
        if outcome is Outcome.MOVED:
            deps.metrics.webhook("accepted")
            log.info("webhook: -> %s", state, extra=extra)
        elif outcome is Outcome.SAME:
            deps.metrics.webhook("replayed")
            log.info("webhook replayed: already %s", state, extra=extra)
        elif outcome is Outcome.MISSING:
            deps.metrics.webhook("unknown_order")
            log.warning("webhook for an unknown tradeNo", extra=extra)
        elif outcome is Outcome.DISCREPANCY:
            deps.metrics.webhook("contradicts_final")
            log.error(
                "webhook says %s but the order is final in another state: discrepancy recorded",
                state,
                extra=extra,
            )
        else:
            # e.g. PROCESSING after the order is already final (a late notification),
            # or a report for an order we have not sent (QUEUED): nothing changes.
            deps.metrics.webhook("out_of_order")
            level = logging.ERROR if state in FINAL_STATES else logging.INFO
            log.log(level, "webhook says %s: not applied to the order's state", state, extra=extra)
        return _ok()

    def _unsigned(self, body: Mapping[str, Any], deps: _Deps) -> Response:
        if not deps.settings.allow_unsigned_webhooks:
            deps.metrics.webhook("unsigned")
            log.warning(
                "webhook refused: unsigned",
                extra={"trade_no": _safe_trade_no(body.get("tradeNo"))},
            )
            return _plain(401, "signature required")
        trade_no = _text(body.get("tradeNo"))
        if not trade_no:
            deps.metrics.webhook("malformed")
            return _plain(400, "tradeNo is required")
        # Unauthenticated input: it may only make us ask the provider about one of our
        # own orders that is still open, never set a state.
        order = deps.ledger.get(trade_no) if is_trade_no(trade_no) else None
        if order is None:
            deps.metrics.webhook("unknown_order")
            log.warning("unsigned webhook for an unknown tradeNo")
            return _ok()
        if order.state not in FINAL_STATES:
            self._publish_lookup(trade_no, deps)
        deps.metrics.webhook("unsigned_lookup")
        log.info("unsigned webhook: lookup requested", extra={"trade_no": trade_no})
        return _ok()

    def _unknown_status(self, trade_no: str, status: str, deps: _Deps) -> Response:
        order = deps.ledger.get(trade_no)
        if order is None:
            deps.metrics.webhook("unknown_order")
            log.warning("webhook for an unknown tradeNo", extra={"trade_no": trade_no})
            return _ok()
        deps.metrics.webhook("unknown_status")
        log.warning(
            "webhook with unknown status %r: lookup requested",
            status[:20],
            extra={"trade_no": trade_no},
        )
        if order.state not in FINAL_STATES:
            self._publish_lookup(trade_no, deps)
        return _ok()

    @staticmethod
    def _check_amount(trade_no: str, reported: Any, deps: _Deps) -> None:
        """A verified report of another amount than ours is applied, but said loudly."""
        text = _text(reported)
        if not text:
            return
        order = deps.ledger.get(trade_no)
        if order is None:
            return
        try:
            same = Decimal(text) == order.amount
        except ArithmeticError:  # not a number, or a signalling NaN
            same = False
        if not same:
            log.error(
                "webhook reports amount %r, the order has %s",
                text[:_MAX_FACT],
                order.amount,
                extra={"trade_no": trade_no},
            )

    @staticmethod
    def _publish_lookup(trade_no: str, deps: _Deps) -> None:
        try:
            deps.publish_lookups([trade_no])
        except Exception as exc:
            raise Unavailable(f"could not publish a lookup ({type(exc).__name__})") from exc


def create_app(
    ledger: Ledger | None = None,
    settings: Settings | None = None,
    publish_lookups: PublishLookups | None = None,
    metrics: Metrics | None = None,
    *,
    configure_logs: bool = False,
) -> WSGIApplication:
    """The receiver; anything not given is taken from :mod:`worker.runtime` on first use."""
    return NotifyApp(ledger, settings, publish_lookups, metrics, configure_logs=configure_logs)


@dataclass(frozen=True)
class _BodyError:
    status: int
    reason: str
    outcome: str


def _read_body(request: Request) -> tuple[dict[str, Any] | None, _BodyError | None]:
    """The JSON object in the body, or why not (never raises)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return None, _BodyError(413, "body too large", "oversized")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return None, _BodyError(413, "body too large", "oversized")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None, _BodyError(400, "body is not JSON", "malformed")
    if not isinstance(body, dict):
        return None, _BodyError(400, "body is not a JSON object", "malformed")
    return body, None


def _safe_trade_no(value: Any) -> str | None:
    text = _text(value)
    return text if is_trade_no(text) else None


def _ok() -> Response:
    return Response(OK, status=200, content_type="text/plain")


def _plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(text, status=status, content_type="text/plain", headers=headers)


def _json(status: int, data: Mapping[str, Any]) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


# The web process (Procfile ``web``): resolves the runtime's ledger and settings lazily
# on the first request, and switches the process to JSON logs then.
app = create_app(configure_logs=True)
