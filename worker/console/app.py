"""The console's WSGI app (``create_app``): Flask with its templates and the vendored
htmx, sessions signed with the database's key, CSRF tokens checked on every POST."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, g, render_template
from flask_wtf.csrf import CSRFError, CSRFProtect

from worker.celery import runtime
from worker.console import actions, auth, pages
from worker.core.defaults import CONSOLE_IDLE_TIMEOUT
from worker.core.roles import Permission
from worker.ledger.model import from_ms


def create_app() -> Flask:
    """The console; its session key is read from the ledger (migration 0013)."""
    runtime.serving_console()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=runtime.ledger().session_key(),
        SESSION_COOKIE_NAME="disburse_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=CONSOLE_IDLE_TIMEOUT),
        # The token lives as long as the session: an idle session ends before it would.
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.session_interface = auth.SessionCookies()
    CSRFProtect(app)
    app.before_request(auth.load_user)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(actions.bp)

    @app.template_filter("ms_time")
    def ms_time(ms: int) -> str:
        return f"{from_ms(ms):%Y-%m-%d %H:%M:%S} UTC"

    @app.context_processor
    def roles() -> dict[str, Any]:
        return {"user": g.get("user"), "can": auth.can, "Permission": Permission}

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError) -> Any:
        return render_template("error.html", status=400, message=exc.description), 400

    @app.errorhandler(403)
    def forbidden(exc: Any) -> Any:
        message = "your role does not allow this"
        return render_template("error.html", status=403, message=message), 403

    @app.errorhandler(404)
    def not_found(exc: Any) -> Any:
        return render_template("error.html", status=404, message="no such page"), 404

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"
        )
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
