"""The console's read pages: batches, a batch (with its live progress fragment), a
payout, the REVIEW queue, the pause switches, failed webhook deliveries, the audit
trail. Each reads a page of rows through indexed queries, never a whole batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, cast

from flask import Blueprint, abort, redirect, render_template, request, url_for

from worker.celery import runtime
from worker.console.auth import requires
from worker.core.defaults import CONSOLE_PAGE
from worker.core.roles import Permission
from worker.core.states import State
from worker.ledger import BatchSummary
from worker.ledger.model import to_ms

bp = Blueprint("pages", __name__)

_STATES = ("held", "open", "settled")


def _day_ms(text: str | None, *, end: bool = False) -> int | None:
    """A YYYY-MM-DD date (UTC) in ms: its start, or with ``end`` the next day's start."""
    if not text:
        return None
    try:
        day = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return None
    return to_ms(day) + (86_400_000 if end else 0)


def progress(summary: BatchSummary) -> dict[str, Any]:
    """How far a batch is: payouts settled of all, and its one-word state."""
    from worker.core.states import SETTLED_STATES

    done = sum(n for s, n in summary.counts.items() if s in SETTLED_STATES)
    if summary.counts.get(State.HELD):
        word = "held"
    else:
        word = "settled" if done == summary.total else "open"
    return {"done": done, "total": summary.total, "state": word}


@bp.route("/")
def home() -> Any:
    return redirect(url_for("pages.batches"))


@bp.route("/batches")
@requires(Permission.READ)
def batches() -> Any:
    state = request.args.get("state") or None
    market = (request.args.get("market") or "").strip().upper() or None
    since, until = request.args.get("from"), request.args.get("to")
    found = runtime.ledger().batches(
        since_ms=_day_ms(since),
        until_ms=_day_ms(until, end=True),
        state=cast(Literal["held", "open", "settled"] | None, state if state in _STATES else None),
        market=market,
        limit=CONSOLE_PAGE,
    )
    rows = [(summary, progress(summary)) for summary in found]
    return render_template(
        "batches.html", rows=rows, states=_STATES, state=state, market=market or "",
        since=since or "", until=until or "",
    )  # fmt: skip


def _batch_view(batch_id: str) -> dict[str, Any]:
    ledger = runtime.ledger()
    summary = ledger.batch(batch_id)
    if summary is None:
        abort(404)
    return {"summary": summary, "progress": progress(summary), "hold": ledger.hold(batch_id)}


@bp.route("/batches/<batch_id>")
@requires(Permission.READ)
def batch(batch_id: str) -> Any:
    return render_template("batch.html", **_batch_view(batch_id))


@bp.route("/batches/<batch_id>/progress")
@requires(Permission.READ)
def batch_progress(batch_id: str) -> Any:
    """The live part of a batch's page (htmx polls it while the batch is open)."""
    return render_template("_progress.html", **_batch_view(batch_id))


@bp.route("/batches/<batch_id>/export.csv")
@requires(Permission.READ)
def export(batch_id: str) -> Any:
    """`disburse export`'s CSV, the same columns, through a file (a batch may be big)."""
    import tempfile

    from flask import send_file

    from worker.flows import report  # the CSV's format only: no command is imported

    ledger = runtime.ledger()
    if ledger.batch(batch_id) is None:
        abort(404)
    spool = tempfile.TemporaryFile("w+b")  # noqa: SIM115 - send_file closes it
    with open(spool.fileno(), "w", encoding="utf-8", newline="", closefd=False) as out:
        report.export_csv(ledger, [batch_id], out)
    spool.seek(0)
    return send_file(
        spool, mimetype="text/csv", as_attachment=True, download_name=f"{batch_id}.csv"
    )


@bp.route("/payout")
@requires(Permission.READ)
def payout() -> Any:
    key = (request.args.get("q") or "").strip()
    order = runtime.ledger().find(key) if key else None
    history = runtime.ledger().history(order.trade_no) if order else []
    status = 404 if key and order is None else 200
    return render_template("payout.html", q=key, order=order, history=history), status


@bp.route("/review")
@requires(Permission.READ)
def review() -> Any:
    orders = runtime.decisions().pending()[:CONSOLE_PAGE]
    return render_template("review.html", orders=orders)


@bp.route("/pauses")
@requires(Permission.READ)
def pauses() -> Any:
    from worker.core.config import get_settings

    accounts = [account.name for account in get_settings().accounts]
    records = runtime.pause_switch().records()
    return render_template("pauses.html", records=records, accounts=accounts)


@bp.route("/deliveries")
@requires(Permission.READ)
def deliveries() -> Any:
    after = request.args.get("after", type=int, default=0)
    failing = runtime.deliveries().failing(after=after, limit=CONSOLE_PAGE)
    events = {e.cursor: e for e in runtime.feed().by_ids([s.event_id for s in failing])}
    rows = [(status, events.get(status.event_id)) for status in failing]
    return render_template("deliveries.html", rows=rows)


@bp.route("/audit")
@requires(Permission.READ)
def audit() -> Any:
    batch_id = request.args.get("batch") or None
    before = request.args.get("before", type=int)
    events = runtime.ledger().audit_events(
        batch_id=batch_id, before=before, limit=CONSOLE_PAGE, newest_first=True
    )
    return render_template("audit.html", events=events, batch=batch_id or "")


@bp.route("/users")
@requires(Permission.MANAGE_USERS)
def users() -> Any:
    from worker.core.roles import Role

    return render_template("users.html", users=runtime.ledger().users(), roles=list(Role))
