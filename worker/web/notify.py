"""The webhook receiver: a WSGI app (werkzeug) served by waitress (Procfile ``web``).

Routes:

``POST <the path of NOTIFY_URL>`` and ``POST /notify``
    The provider's asynchronous notification, sent to the ``notifyUrl`` of each payout,
    which is ``NOTIFY_URL`` unless the row gives its own. Its rules (the signature, the
    effect on the order, the answer) are :mod:`worker.web.webhook`'s; this module reads the
    body, answers, counts and logs what that module replies.

    Malformed input is a 4xx, never a 500: bad JSON or not an object 400, over
    ``MAX_BODY`` 413, wrong method 405. PostgreSQL, Redis or the broker down is a 503,
    which the provider retries. A POST to a path nothing is served on is a 404, logged (the path
    only) and counted (outcome ``unknown_path``): notifications refused unnoticed leave
    payouts to reconcile alone.

``GET /healthz``
    ``{"redis": "ok", "postgres": "ok"}`` (200); either ``"unreachable"`` makes it a 503.

``GET /metrics``
    Prometheus text of the cluster-wide metrics (:mod:`worker.coordination.metrics`).

    These two are operations' routes, not the provider's: ``/metrics`` costs a database
    query per request. On the provider's listener they are answered only to a client on
    this machine that is not relayed by a proxy (loopback address, no forwarding
    header), and 404 to anyone else; with ``METRICS_PORT`` set they are also served on a
    listener of their own (:mod:`worker.web.listeners`).

Until the database holds every migration of this code, every request is answered
503 with the error naming ``disburse db upgrade``; the check is made again on the
next request, so the receiver serves as soon as the schema is upgraded.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from worker.celery import startup
from worker.coordination.metrics import Metrics
from worker.core.exceptions import ConfigError, SchemaBehind
from worker.db.readiness import check_schema
from worker.web.webhook import LogLine, Reply, RequestLookups, Unavailable, WebhookHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from worker.core.settings import Settings
    from worker.ledger import Ledger

log = logging.getLogger(__name__)

# Also waitress's max_request_body_size (Procfile ``web``): the server refuses a longer
# body (413) before the app sees it; this check stays for other servers.
MAX_BODY = 64 * 1024
NOTIFY_PATH = "/notify"
_MAX_LOGGED_PATH = 200
# Operations' routes: on the provider's listener only for direct local clients.
_OPERATIONS = frozenset({"healthz", "metrics"})
# Headers a reverse proxy adds: a request carrying one came from elsewhere.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


@dataclass(frozen=True)
class _Deps:
    ledger: Ledger
    redis: redis.Redis
    webhooks: WebhookHandler
    metrics: Metrics
    registry: CollectorRegistry
    notify_paths: tuple[str, ...]


def notify_paths(notify_url: str) -> tuple[str, ...]:
    """The paths notifications are served on: the path of ``notify_url``, and ``/notify``."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(notify_url).path) or "/"
    return tuple(dict.fromkeys((path, NOTIFY_PATH)))


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
        publish_lookups: RequestLookups | None = None,
        metrics: Metrics | None = None,
        *,
        redis_client: redis.Redis | None = None,
        configure_logs: bool = False,
    ) -> None:
        self._given = (ledger, settings, publish_lookups, metrics, redis_client)
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
        from worker.celery import runtime

        ledger, settings, publish_lookups, metrics, client = self._given
        if self._configure_logs:
            from worker.core.logs import configure_logging

            configure_logging("INFO")
        own_settings = settings is None
        if settings is None:
            from worker.core.config import get_settings

            settings = get_settings()
            startup.servers(settings)  # ConfigError: each request answered 503, logged
        if ledger is None:
            # The process's own ledger, so its schema must be current (a ledger handed
            # in is its giver's to vouch for). Raising here resolves nothing: the next
            # request checks again.
            check_schema(settings.database_url)
            ledger = runtime.ledger()
        if publish_lookups is None:
            # Marked as outstanding, so a reconcile pass does not ask twice.
            publish_lookups = runtime.in_flight().request_lookups
        # A notification is verified with the secret of its order's market's account (a
        # market without an account configured has none).
        secrets = {m: account.app_secret for account in settings.accounts for m in account.markets}
        webhooks = WebhookHandler(
            ledger,
            secrets=secrets,
            request_lookups=publish_lookups,
            allow_unsigned=settings.allow_unsigned_webhooks,
        )
        metrics = metrics or runtime.metrics()
        client = client or runtime.redis_client()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.collector(ledger))
        paths = notify_paths(settings.notify_url)
        log.info("webhook receiver: notifications are served on %s", ", ".join(paths))
        if own_settings:
            startup.report(settings, log, "webhook receiver")
        return _Deps(ledger, client, webhooks, metrics, registry, paths)

    # WSGI ---------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request, *, operations_only: bool = False) -> Response:
        """The answer to one request; ``operations_only``: the operations listener's, which
        serves /healthz and /metrics to whoever reaches it, and nothing else."""
        try:
            if operations_only:
                endpoint = self._operations_endpoint(request)
            else:
                endpoint = self._endpoint(request)
                if endpoint in _OPERATIONS and not _direct_local(request):
                    return _plain(404, "not found")
            handler = {
                "notify": self.notify,
                "healthz": self.healthz,
                "metrics": self.metrics,
            }[endpoint]
            return handler(request)
        except SchemaBehind as exc:
            log.error("webhook receiver: %s", exc)
            return _plain(503, str(exc))
        except ConfigError as exc:  # DATABASE_URL or REDIS_URL not set
            log.error("webhook receiver: %s", exc)
            return _plain(503, "not configured")
        except MethodNotAllowed as exc:
            allow = ", ".join(exc.valid_methods or ())
            return _plain(405, "method not allowed", headers={"Allow": allow})
        except NotFound:
            if request.method == "POST" and not operations_only:
                return self._answer(self._unknown_path(request))
            return _plain(404, "not found")
        except HTTPException as exc:
            return _plain(exc.code or 400, exc.name)
        except (Unavailable, redis.RedisError, psycopg.OperationalError) as exc:
            # psycopg's OperationalError covers the pool's PoolTimeout: no server came back
            # within the pool's wait (the provider retries; meanwhile nothing was applied).
            log.error(
                "webhook receiver cannot reach PostgreSQL, Redis or the broker: %s: %s",
                type(exc).__name__,
                exc,
            )
            return _plain(503, "unavailable")
        except Exception:
            log.exception("webhook receiver failed")
            return _plain(500, "error")

    def _endpoint(self, request: Request) -> str:
        if request.path in self.deps.notify_paths:
            if request.method != "POST":
                raise MethodNotAllowed(valid_methods=["POST"])
            return "notify"
        return self._operations_endpoint(request)

    def _operations_endpoint(self, request: Request) -> str:
        endpoint, _ = self.url_map.bind_to_environ(request.environ).match()
        return str(endpoint)

    def _unknown_path(self, request: Request) -> Reply:
        """A notification sent where none is served, e.g. a proxy rewrote NOTIFY_URL's path."""
        refused = LogLine(
            logging.WARNING,
            "webhook refused: POST to %r, notifications are served on %s",
            (request.path[:_MAX_LOGGED_PATH], ", ".join(self.deps.notify_paths)),
        )
        return Reply(404, "not found", "unknown_path", (refused,))

    def _answer(self, reply: Reply) -> Response:
        """Count and log what the receiver did with a notification, and answer it."""
        self.deps.metrics.webhook(reply.outcome)
        self.deps.metrics.flush()  # the process's Metrics batches: this one goes now
        for line in reply.logs:
            log.log(line.level, line.message, *line.args, extra={"trade_no": reply.trade_no})
        return _plain(reply.status, reply.text)

    # /healthz -----------------------------------------------------------------------
    def healthz(self, request: Request) -> Response:
        checks: dict[str, Callable[[], object]] = {
            "redis": self.deps.redis.ping,
            "postgres": self.deps.ledger.ping,
        }
        found: dict[str, str] = {}
        for name, check in checks.items():
            try:
                check()
            except Exception as exc:
                log.warning("health check: %s unreachable (%s)", name, type(exc).__name__)
                found[name] = "unreachable"
            else:
                found[name] = "ok"
        healthy = all(value == "ok" for value in found.values())
        return _json(200 if healthy else 503, found)

    # /metrics -----------------------------------------------------------------------
    def metrics(self, request: Request) -> Response:
        body = generate_latest(self.deps.registry)
        return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)

    # /notify ------------------------------------------------------------------------
    def notify(self, request: Request) -> Response:
        body = _read_body(request)
        if isinstance(body, Reply):
            return self._answer(body)
        return self._answer(self.deps.webhooks.handle(body))


def create_app(
    ledger: Ledger | None = None,
    settings: Settings | None = None,
    publish_lookups: RequestLookups | None = None,
    metrics: Metrics | None = None,
    *,
    redis_client: redis.Redis | None = None,
    configure_logs: bool = False,
) -> WSGIApplication:
    """The receiver; anything not given is taken from :mod:`worker.celery.runtime` on first use."""
    return NotifyApp(
        ledger,
        settings,
        publish_lookups,
        metrics,
        redis_client=redis_client,
        configure_logs=configure_logs,
    )


def _read_body(request: Request) -> dict[str, Any] | Reply:
    """The JSON object in the body, or the reply refusing it (never raises)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return _refused(413, "body too large", "oversized")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return _refused(413, "body too large", "oversized")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return _refused(400, "body is not JSON", "malformed")
    if not isinstance(body, dict):
        return _refused(400, "body is not a JSON object", "malformed")
    return body


def _direct_local(request: Request) -> bool:
    """A client on this machine, talking to this listener itself: a loopback address and
    no forwarding header (behind a local proxy every client has a loopback address)."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback and not any(h in request.headers for h in _FORWARDING_HEADERS)


def _refused(status: int, reason: str, outcome: str) -> Reply:
    return Reply(
        status, reason, outcome, (LogLine(logging.WARNING, "webhook refused: %s", (reason,)),)
    )


def _plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(text, status=status, content_type="text/plain", headers=headers)


def _json(status: int, data: Mapping[str, Any]) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


# The web process (Procfile ``web``): resolves the runtime's ledger and settings lazily
# on the first request, and switches the process to JSON logs then.
app = NotifyApp(configure_logs=True)
