"""``disburse events``: the payouts' events as the application gets them, where each one's
webhook stands, and sending them again."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from worker.cli.common import UserError
from worker.outbox import INTAKE, DeliveryStatus, Event

_EVENT_ID = re.compile(r"^(?:evt_)?([0-9]{1,18})$")


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise) or Unix seconds."""
    if value is None:
        return None
    try:
        if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value):
            return datetime.fromtimestamp(float(value), UTC)
        at = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise click.BadParameter(
            f"{value!r} is not a time such as 2026-12-01T17:00:00Z or Unix seconds"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _delivery(status: DeliveryStatus | None) -> str:
    if status is None:
        return "not sent"
    said = f"{status.state}, {status.attempts} attempt{'s' if status.attempts != 1 else ''}"
    if status.state != "delivered" and status.last_error:
        said += f", last {status.last_error}"
    if status.state == "pending" and status.attempts and status.next_at is not None:
        said += f", next {status.next_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
    return said


def _delivery_dict(status: DeliveryStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "state": status.state,
        "attempts": status.attempts,
        "last_status": status.last_status,
        "last_error": status.last_error,
        "next_at": status.next_at.isoformat() if status.next_at else None,
        "delivered_at": status.delivered_at.isoformat() if status.delivered_at else None,
    }


def _show(events: Sequence[Event], as_json: bool) -> None:
    from worker.celery import runtime

    statuses = runtime.deliveries().status([e.cursor for e in events])
    for event in events:
        status = statuses.get(event.cursor)
        if as_json:
            click.echo(json.dumps({**event.to_dict(), "delivery": _delivery_dict(status)}))
            continue
        head = f"{event.id}  {event.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z  {event.type:<17} "
        if event.batch_facts is not None:  # a batch's event: what it says of the batch
            said = "  ".join(f"{k}: {v}" for k, v in event.batch_facts.items())
            click.echo(f"{head}{event.batch_id}  {said}  [{_delivery(status)}]")
            continue
        click.echo(
            f"{head}{event.trade_no}  {event.reference or '-'}  {event.batch_id}  "
            f"{format(event.amount, 'f')} {event.currency}  [{_delivery(status)}]"
        )


@click.group(invoke_without_command=True)
@click.option("--batch", help="Only this batch's events.")
@click.option("--since", callback=_time, help="Only events at or after this time.")
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only after this cursor.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--failed-deliveries",
    is_flag=True,
    help="Only events whose webhook was given up, or failed its last attempt.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def events(
    ctx: click.Context,
    batch: str | None,
    since: datetime | None,
    after: int,
    limit: int,
    failed_deliveries: bool,
    as_json: bool,
) -> None:
    """The payouts' events as the application gets them, oldest first, each with where
    its webhook stands.

    \b
    Examples:
      disburse events --batch b1f0c2a9d8e7f6a5b
      disburse events --failed-deliveries
      disburse events redeliver evt_1234
    """
    if ctx.invoked_subcommand is not None:
        return
    from worker.celery import runtime

    feed = runtime.feed()
    if batch is not None and runtime.ledger().batch(batch) is None:
        raise UserError(f"no batch {batch}")
    if failed_deliveries:
        failing = runtime.deliveries().failing(after=after, limit=limit, batch_id=batch)
        found = feed.by_ids([s.event_id for s in failing])
    elif since is not None:
        found = feed.since(since, after=after, limit=limit)
    else:
        found = feed.read(after, limit, batch_id=batch).events
    if batch is not None:
        found = [e for e in found if e.batch_id == batch]
    _show(found, as_json)
    if len(found) == limit and not as_json:
        click.echo(f"(more: --after {found[-1].cursor})", err=True)


@events.command()
@click.argument("event_ids", nargs=-1, metavar="[ID]...")
@click.option("--since", callback=_time, help="Every event at or after this time.")
def redeliver(event_ids: tuple[str, ...], since: datetime | None) -> None:
    """Send events to APP_WEBHOOK_URL again: those named (evt_1234), or --since a time.

    A redelivery carries the same id and body, so the application's deduplication
    holds; it goes out on the next sending run, after that payout's pending events.
    """
    from worker.celery import runtime
    from worker.core.config import get_settings

    if bool(event_ids) == (since is not None):
        raise UserError("name the events to send again, or give --since, not both")
    feed, deliveries = runtime.feed(), runtime.deliveries()
    sent = 0
    if event_ids:
        ids = []
        for given in event_ids:
            match = _EVENT_ID.match(given)
            if match is None:
                raise UserError(f"{given!r} is not an event id such as evt_1234")
            ids.append(int(match.group(1)))
        found = feed.by_ids(ids)
        missing = sorted(set(ids) - {e.cursor for e in found})
        if missing:
            raise UserError(f"no event {', '.join(f'evt_{i}' for i in missing)}; nothing sent")
        sent = deliveries.redeliver(found)
    else:
        assert since is not None
        after = 0
        while page := feed.since(since, after=after, limit=INTAKE):
            sent += deliveries.redeliver(page)
            after = page[-1].cursor
    from worker.ledger.audit import Action

    asked = ", ".join(event_ids) if event_ids else f"since {since.isoformat() if since else ''}"
    facts = {"events": asked, "sent": sent}
    runtime.ledger().audit(Action.REDELIVER, get_settings().operator, runtime.origin(), facts=facts)
    click.echo(f"{sent} event{'s' if sent != 1 else ''} to be sent again")
    if get_settings().app_webhook_url is None:
        click.echo("APP_WEBHOOK_URL is not set: they are sent once it is", err=True)
