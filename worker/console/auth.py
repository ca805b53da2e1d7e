"""Who is asking: a signed-in session (cookie signed with the database's key, idle
sessions expire) or, when configured, a trusted proxy's header; and what their role
lets them do. Every form carries a CSRF token (Flask-WTF's CSRFProtect, in app.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from worker.celery import runtime
from worker.core.config import get_settings
from worker.core.defaults import CONSOLE_IDLE_TIMEOUT
from worker.core.exceptions import SignInRefused
from worker.core.roles import Permission, allows
from worker.ledger.users import ConsoleUser

bp = Blueprint("auth", __name__)


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Any) -> bool:
        return request.is_secure


def address() -> str:
    return request.remote_addr or "unknown"


def origin() -> str:
    """Where an action comes from, for the audit trail: the console and the address."""
    return f"console@{address()}"


def _from_proxy() -> ConsoleUser | None:
    """The user a trusted proxy names (CONSOLE_TRUSTED_HEADER), only from its addresses."""
    settings = get_settings()
    header = settings.console_trusted_header
    if not header or address() not in settings.console_trusted_proxies:
        return None
    name = request.headers.get(header, "").strip()
    return runtime.ledger().user(name) if name else None


def load_user() -> None:
    """Before every request: ``g.user`` is the signed-in user (roles re-read each time,
    so a change applies at once), or None; an idle session is ended."""
    g.user = _from_proxy()
    if g.user is not None:
        return
    name, seen = session.get("user"), session.get("seen", 0)
    if name is None:
        return
    if time.time() - seen > CONSOLE_IDLE_TIMEOUT:
        session.clear()
        flash("your session expired: sign in again")
        return
    g.user = runtime.ledger().user(name)
    if g.user is None:
        session.clear()
        return
    session["seen"] = int(time.time())


def can(permission: Permission) -> bool:
    user = g.get("user")
    return user is not None and allows(user.role, permission)


def requires(permission: Permission) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A view for those whose role grants ``permission``: others signed in get 403, and
    anyone not signed in is sent to sign in."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if g.get("user") is None:
                return redirect(url_for("auth.sign_in", next=request.path))
            if not can(permission):
                abort(403)
            return view(*args, **kwargs)

        return checked

    return decorate


@bp.route("/signin", methods=["GET", "POST"])
def sign_in() -> Any:
    error = None
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        try:
            user = runtime.accounts().sign_in(name, request.form.get("password", ""), address())
        except SignInRefused as exc:
            error = str(exc)
        else:
            session.clear()  # a new session for a new sign-in (no fixation)
            session["user"], session["seen"] = user.name, int(time.time())
            target = request.args.get("next", "")
            # Only a path of this site: never an address elsewhere.
            safe = target.startswith("/") and not target.startswith("//")
            return redirect(target if safe else url_for("pages.batches"))
    return render_template("signin.html", error=error), 401 if error else 200


@bp.route("/signout", methods=["POST"])
def sign_out() -> Any:
    session.clear()
    return redirect(url_for("auth.sign_in"))
