"""The web process's listeners: the provider's, and with METRICS_PORT the operations one.

The Procfile's ``web`` line runs ``waitress-serve --call worker.web.listeners:web_app``:
waitress serves the provider's notifications (:mod:`worker.web.notify`) on ``PORT``, and
enforces the body limit itself (``--max-request-body-size``, one more than
:data:`worker.web.notify.MAX_BODY`: waitress refuses a body of that size or more), so that
a long body is refused (413) before it is buffered. ``--no-clear-untrusted-proxy-headers``
lets the receiver see a proxy's forwarding headers, which it reads only to tell a relayed
client from a local one (it trusts no address in them).

:func:`web_app` runs once as the process starts; when ``METRICS_PORT`` is set it also
starts a second, small waitress server on ``METRICS_HOST:METRICS_PORT`` (default host
127.0.0.1) that serves ``/metrics`` and ``/healthz`` and nothing else. The provider's
listener answers those two only to a client on this machine that no proxy relays.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from waitress import create_server
from werkzeug.wrappers import Request

from worker.core.exceptions import ConfigError
from worker.web.notify import NotifyApp, app

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from waitress.server import BaseWSGIServer, MultiSocketServer

log = logging.getLogger(__name__)

# The operations listener: GETs only, and few at once (a scraper, a health check).
_OPERATIONS_BODY = 1024
_OPERATIONS_THREADS = 2


class OperationsApp:
    """/metrics and /healthz of a receiver, on a listener of their own."""

    def __init__(self, receiver: NotifyApp) -> None:
        self.receiver = receiver

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        response = self.receiver.dispatch(Request(environ), operations_only=True)
        return response(environ, start_response)


def start_operations_listener(
    receiver: NotifyApp, host: str, port: int
) -> BaseWSGIServer | MultiSocketServer:
    """Bind ``host:port`` now (an error here is the caller's) and serve in a daemon thread."""
    server = create_server(
        OperationsApp(receiver),
        host=host,
        port=port,
        threads=_OPERATIONS_THREADS,
        max_request_body_size=_OPERATIONS_BODY,
        ident="disburse-operations",
    )
    thread = threading.Thread(target=server.run, name="operations-listener", daemon=True)
    thread.start()
    return server


def web_app() -> WSGIApplication:
    """The Procfile ``web`` application (``waitress-serve --call``): the receiver, with the
    operations listener started beside it when METRICS_PORT is set."""
    from worker.core.config import get_settings
    from worker.core.logs import configure_logging

    configure_logging("INFO")  # JSON lines from the start, as the receiver writes them
    try:
        settings = get_settings()
        if settings.metrics_port is not None:
            start_operations_listener(app, settings.metrics_host, settings.metrics_port)
    except ConfigError as exc:
        sys.exit(f"web: configuration: {exc}")
    except OSError as exc:
        sys.exit(f"web: cannot listen on METRICS_HOST:METRICS_PORT for /metrics: {exc.strerror}")
    if settings.metrics_port is not None:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        log.info("web: /metrics and /healthz are served on %s", where)
    return app
