"""Commands on one batch: enqueue a file, see where it stands, export it, approve, cancel."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import click

from worker.cli.common import UserError, echo_row_errors, pause_text
from worker.exceptions import InputError


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--market", required=True, help="The provider market of every row: ID, AR, JP or KH.")
@click.option("--skip-invalid", is_flag=True, help="Enqueue the valid rows even if some are not.")
@click.option("--dry-run", is_flag=True, help="Validate and sign every row; enqueue nothing.")
@click.option("--hold", is_flag=True, help="Create the batch HELD until `disburse approve`.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def enqueue(
    file: Path, market: str, skip_invalid: bool, dry_run: bool, hold: bool, as_json: bool
) -> None:
    """Validate a CSV or JSON Lines FILE and enqueue its payouts as one batch.

    Nothing is enqueued when a row is invalid (exit 1), unless --skip-invalid.

    \b
    Example:
      disburse enqueue payouts.csv --market ID
    """
    from worker import runtime
    from worker.rows import read_rows

    try:
        rows, parse_errors = read_rows(file)
        result = runtime.producer().enqueue_batch(
            market,
            rows,
            parse_errors=parse_errors,
            skip_invalid=skip_invalid,
            hold=hold,
            dry_run=dry_run,
        )
    except InputError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        echo_row_errors(result.rejected)
        if result.dry_run:
            click.echo(f"dry run: {result.accepted} payouts valid and signed; nothing enqueued")
        elif result.batch_id is None:
            click.echo(f"nothing enqueued: {len(result.rejected)} invalid rows", err=True)
        else:
            state = "held for approval" if result.held else "queued"
            line = f"batch {result.batch_id}: {result.accepted} payouts {state}"
            line += f", {result.existing} already enqueued" if result.existing else ""
            line += f", {len(result.rejected)} rows skipped" if result.rejected else ""
            click.echo(line)
    if result.rejected and not skip_invalid:
        raise click.exceptions.Exit(1)


def _pause_of(market: str) -> dict[str, str] | None:
    """What stops the submissions of ``market``: the cluster-wide or its account's switch."""
    from worker import runtime
    from worker.config import get_settings
    from worker.pause import ALL

    paused = runtime.pause_switch().paused()
    names = [ALL]
    # A market this configuration does not know has only the cluster-wide switch.
    with contextlib.suppress(ValueError):
        names.append(get_settings().account(market).name)
    return next(({"account": n, "reason": paused[n]} for n in names if n in paused), None)


@click.command()
@click.argument("batch")
@click.option("--watch", is_flag=True, help="Follow the batch until every payout is settled.")
@click.option("--interval", type=float, default=1.0, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@click.option("--counts-only", is_flag=True, help="Skip the per-order details.")
def status(batch: str, watch: bool, interval: float, as_json: bool, counts_only: bool) -> None:
    """Where BATCH stands: its payouts counted per state.

    \b
    Example:
      disburse status 01JD3X... --watch
    """
    from worker import report, runtime

    ledger = runtime.ledger()
    summary = ledger.batch(batch)
    if summary is None:
        raise UserError(f"no batch {batch}")
    if watch:
        while True:
            click.echo("\r" + report.batch_progress(summary), nl=False)
            if summary.settled:
                click.echo()
                break
            time.sleep(interval)
            summary = ledger.batch(batch) or summary
    data = report.status_dict(ledger, summary, details=not counts_only)
    data["paused"] = _pause_of(summary.market)
    if as_json:
        click.echo(json.dumps(data))
    elif not watch:
        click.echo(report.status_text(data))
    if data["paused"] and not as_json:
        click.echo(f"PAUSED: {pause_text(data['paused']['account'], data['paused']['reason'])}")


@click.command()
@click.argument("batch")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file."
)
def export(batch: str, output: Path | None) -> None:
    """One CSV row per payout of BATCH, to stdout or --output."""
    from worker import report, runtime

    ledger = runtime.ledger()
    if ledger.batch(batch) is None:
        raise UserError(f"no batch {batch}")
    if output is None:
        report.export_csv(ledger, [batch], sys.stdout)
        return
    with open(output, "w", newline="", encoding="utf-8") as out:
        rows = report.export_csv(ledger, [batch], out)
    click.echo(f"wrote {rows} payouts to {output}")


@click.command()
@click.argument("batch")
@click.option("--no-balance-check", is_flag=True, help="Release without checking the balance.")
def approve(batch: str, no_balance_check: bool) -> None:
    """Release a HELD batch, after checking the account's balance covers it.

    Exits 2 when the batch stays held (the balance is short).
    """
    import worker

    try:
        result = worker.approve(batch, check_balance=not no_balance_check)
    except worker.BatchNotFound:
        raise UserError(f"no batch {batch}") from None
    click.echo(result.message)
    if result.held is not None:
        raise click.exceptions.Exit(2)


@click.command()
@click.argument("batch")
def cancel(batch: str) -> None:
    """Cancel every payout of BATCH that has not been sent yet."""
    import worker

    try:
        click.echo(worker.cancel(batch).message)
    except worker.BatchNotFound:
        raise UserError(f"no batch {batch}") from None
