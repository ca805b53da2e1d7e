"""``disburse audit``: the audit trail, every operator action, oldest first."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--since", help="Only actions since: 30m, 12h, 7d, or a date/time.")
@click.option("--batch", help="Only the actions on this batch.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="At most this many actions.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit(since: str | None, batch: str | None, limit: int, as_json: bool) -> None:
    """Who did what: every operator action, oldest first.

    Enqueue, approve, cancel, pause, resume, resolve, retry, redeliver, and the policy
    loaded (with its sha256): who, when, which batch or payout, from where, the note.
    The trail is append-only: PostgreSQL refuses to change or delete a row of it.

    \b
    Examples:
      disburse audit --since 1d
      disburse audit --batch b1f0c2d3e4a5b6c7 --json
    """
    import worker
    from worker.cli.batch import parse_since

    events = worker.audit(since=parse_since(since), batch_id=batch, limit=limit)
    for event in events:
        if as_json:
            click.echo(json.dumps(event.to_dict()))
            continue
        target = " ".join(x for x in (event.batch_id, event.trade_no) if x)
        note = f"  {event.note}" if event.note else ""
        click.echo(
            f"{event.at:%Y-%m-%d %H:%M:%S%z}  {event.who:<12} {event.action:<15} "
            f"{target or '-':<17} {event.origin}{note}"
        )
    if not events and not as_json:
        click.echo("no audit events" + (f" since {since}" if since else ""))
