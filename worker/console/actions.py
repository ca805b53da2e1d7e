"""What a person does from the console, through the functions the command line calls,
each in the audit trail with the signed-in user's name and the console's address:
approve, cancel, retry the failed, resolve a REVIEW payout, pause and resume, send a
webhook again."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, request, url_for

from worker.celery import runtime
from worker.console.auth import origin, requires
from worker.coordination.pause import ALL, PauseSwitch
from worker.core.config import get_settings
from worker.core.exceptions import InputError, ProviderError, RateLimitTimeout
from worker.core.roles import Permission
from worker.ledger.audit import Action

bp = Blueprint("actions", __name__)


def _back(fallback: str, **values: Any) -> Any:
    return redirect(url_for(fallback, **values), code=303)


@bp.route("/batches/<batch_id>/approve", methods=["POST"])
@requires(Permission.APPROVE)
def approve(batch_id: str) -> Any:
    try:
        result = runtime.approvals().approve(
            batch_id,
            operator=g.user.name,
            note=request.form.get("note") or None,
            authenticated=True,  # APPROVALS_REQUIRE_LOGIN: a signed-in person
            origin=origin(),
        )
    except InputError as exc:
        flash(f"not approved: {exc}", "error")
    except (ProviderError, RateLimitTimeout) as exc:  # the balance could not be read
        flash(f"approval recorded; not released: the provider's balance ({exc})", "error")
    else:
        flash(result.message)
    return _back("pages.batch", batch_id=batch_id)


@bp.route("/batches/<batch_id>/cancel", methods=["POST"])
@requires(Permission.OPERATE)
def cancel(batch_id: str) -> Any:
    try:
        result = runtime.batch_controls().cancel(batch_id, g.user.name, origin=origin())
    except InputError as exc:
        flash(str(exc), "error")
    else:
        flash(result.message)
    return _back("pages.batch", batch_id=batch_id)


@bp.route("/batches/<batch_id>/retry", methods=["POST"])
@requires(Permission.OPERATE)
def retry(batch_id: str) -> Any:
    try:
        result = runtime.producer().retry(batch_id, operator=g.user.name)
    except InputError as exc:
        flash(str(exc), "error")
        return _back("pages.batch", batch_id=batch_id)
    for trade_no, why in result.not_retried.items():
        flash(f"{trade_no}: not retried: {why}", "error")
    if result.batch_id is None:
        flash(f"nothing retried in batch {batch_id}")
        return _back("pages.batch", batch_id=batch_id)
    flash(f"{result.accepted} payouts of {batch_id} enqueued again as batch {result.batch_id}")
    return _back("pages.batch", batch_id=result.batch_id)


@bp.route("/review/<trade_no>", methods=["POST"])
@requires(Permission.OPERATE)
def resolve(trade_no: str) -> Any:
    decisions = dataclasses.replace(runtime.decisions(), origin=origin())
    try:
        order = decisions.resolve(
            trade_no,
            request.form.get("decision", ""),
            note=request.form.get("note", ""),
            operator=g.user.name,
        )
    except InputError as exc:
        flash(f"not decided: {exc}", "error")
    except (ProviderError, RateLimitTimeout) as exc:
        flash(f"could not ask the provider ({type(exc).__name__}); nothing changed", "error")
    else:
        flash(f"{order.trade_no} (reference {order.reference or '-'}): {order.state}")
    return _back("pages.review")


def _switch(name: str | None) -> PauseSwitch | None:
    """The switch of the provider account named (``ID+JP``); None: the cluster-wide one."""
    if not name or name == ALL:
        return None
    for account in get_settings().accounts:
        if account.name == name:
            return runtime.pause_switch(account)
    abort(400)


@bp.route("/pauses/pause", methods=["POST"])
@requires(Permission.OPERATE)
def pause() -> Any:
    reason = (request.form.get("reason") or "").strip()
    if not reason:
        flash("a pause needs a reason", "error")
        return _back("pages.pauses")
    switch = _switch(request.form.get("account"))
    paused = runtime.batch_controls().pause(reason, g.user.name, origin=origin(), switch=switch)
    where = "cluster-wide" if switch is None else f"for provider account {switch.account}"
    if paused.already is not None:
        flash(
            f"already paused {where} by {paused.already.who}: {paused.already.reason}; not changed"
        )
    else:
        flash(f"submissions paused {where}")
    return _back("pages.pauses")


@bp.route("/pauses/resume", methods=["POST"])
@requires(Permission.OPERATE)
def resume() -> Any:
    switch = _switch(request.form.get("account"))
    resumed = runtime.batch_controls().resume(g.user.name, origin=origin(), switch=switch)
    flash(f"resumed; {resumed.published} queued payouts published")
    return _back("pages.pauses")


@bp.route("/deliveries/<int:event_id>/redeliver", methods=["POST"])
@requires(Permission.OPERATE)
def redeliver(event_id: int) -> Any:
    found = runtime.feed().by_ids([event_id])
    sent = runtime.deliveries().redeliver(found)
    facts = {"events": f"evt_{event_id}", "sent": sent}
    runtime.ledger().audit(Action.REDELIVER, g.user.name, origin(), facts=facts)
    flash(f"evt_{event_id}: to be sent again" if sent else f"evt_{event_id}: nothing to send")
    return _back("pages.deliveries")


@bp.route("/users", methods=["POST"])
@requires(Permission.MANAGE_USERS)
def add_user() -> Any:
    name = (request.form.get("name") or "").strip()
    role = request.form.get("role") or ""
    try:
        runtime.accounts().add(name, role, request.form.get("password") or "", by=g.user.name)
    except InputError as exc:
        flash(f"not added: {exc}", "error")
    else:
        flash(f"user {name} added as {role}")
    return _back("pages.users")
