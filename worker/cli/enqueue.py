"""Commands on rows files: enqueue one as a batch, the columns each market's file takes
(``fields``), and a sample file to start from (``template``)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click

from schemas import MARKETS
from worker.cli.common import ISO_TIME, OUTPUT, UserError, echo_row_errors, writing
from worker.core.exceptions import InputError, InvalidFile
from worker.core.text import plural

MARKET = click.Choice(list(MARKETS), case_sensitive=False)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--market", required=True, type=MARKET, help="The market of every row.")
@click.option("--skip-invalid", is_flag=True, help="Enqueue the valid rows even if some are not.")
@click.option("--dry-run", is_flag=True, help="Validate and sign every row; enqueue nothing.")
@click.option("--hold", is_flag=True, help="Create the batch HELD until `disburse approve`.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="The batch's idempotency key (default: the digest of FILE's bytes).",
)
@click.option(
    "--allow-duplicate", is_flag=True, help="Enqueue FILE even if it was enqueued before."
)
@click.option(
    "--not-before",
    metavar="TIME",
    type=ISO_TIME,
    help="Hold the batch until TIME (ISO 8601 with offset, e.g. 2026-12-24T09:00+07:00).",
)
@click.option("--operator", help="Who enqueues (default: DISBURSE_OPERATOR, else the login name).")
def enqueue(
    file: Path,
    market: str,
    skip_invalid: bool,
    dry_run: bool,
    hold: bool,
    as_json: bool,
    idempotency_key: str | None,
    allow_duplicate: bool,
    not_before: datetime | None,
    operator: str | None,
) -> None:
    """Validate FILE and enqueue its payouts as one batch.

    FILE is CSV (comma, semicolon or tab separated, UTF-8, a header row) or JSON Lines
    (.jsonl: one object per line; `-` reads stdin), in the market's column names: `disburse fields
    --market ID` lists them, `disburse template --market ID` writes a sample. A row
    whose `reference` was enqueued before is not paid again: the command says which
    batch holds it.

    The same FILE (the same bytes) enqueued again for the market within
    IDEMPOTENCY_WINDOW (30 days) is not paid again: the command names the first batch
    and exits 0. --idempotency-key KEY does the same for any file given KEY (a KEY given
    before to other rows is refused); --allow-duplicate enqueues FILE all the same.

    Nothing is enqueued when a row is invalid (each one is listed, exit 1), unless
    --skip-invalid. Once the batch is stored the command succeeds: if its messages
    cannot be sent, it warns and the reconcile pass sends them (never enqueue it again).

    Under DISBURSE_POLICY the batch waits HELD while it needs approvals (never its
    creator's: --operator, else DISBURSE_OPERATOR, else the login name), until
    --not-before, or while it would pass the market's daily limit; the beat releases it
    once nothing holds it.

    \b
    Examples:
      disburse enqueue payouts.csv --market ID
      disburse enqueue payouts.csv --market JP --dry-run
      disburse enqueue payouts.jsonl --market KH --hold --json
      disburse enqueue payouts.csv --market ID --not-before 2026-12-24T09:00+07:00
    """
    from worker.celery import runtime
    from worker.core.columns import check_columns
    from worker.core.rows import read_bytes, read_rows
    from worker.ledger.idempotency import file_key

    if allow_duplicate and idempotency_key is not None:
        raise click.UsageError("--allow-duplicate and --idempotency-key exclude each other")
    given_key = idempotency_key
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else read_bytes(file)
        rows, parse_errors = read_rows(file, raw)
        check_columns(market, {name for _, row in rows for name in row})
        if idempotency_key is None and not allow_duplicate:
            idempotency_key = file_key(raw)
        result = runtime.producer().enqueue_batch(
            market,
            rows,
            parse_errors=parse_errors,
            skip_invalid=skip_invalid,
            hold=hold,
            dry_run=dry_run,
            idempotency_key=idempotency_key,
            operator=operator,
            not_before=not_before,
        )
    except InvalidFile as exc:
        message = str(exc)
        raise UserError(message if str(file) in message else f"{file}: {message}") from None
    except InputError as exc:
        raise UserError(str(exc)) from None
    if not result.published:
        click.echo(
            f"warning: batch {result.batch_id} is stored ({plural(result.accepted, 'payout')}"
            " QUEUED) but its messages could not be sent to the broker: the reconcile pass"
            " (beat) sends them once the broker answers; do not enqueue the file again",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        echo_row_errors(result.rejected)
        if result.duplicate_of is not None:
            _say_duplicate(result.duplicate_of, result.duplicate_at_ms, given_key)
        elif result.dry_run:
            payouts = plural(result.accepted, "payout")
            click.echo(f"dry run: {payouts} valid and signed; nothing enqueued")
        elif result.batch_id is None:
            invalid = plural(len(result.rejected), "invalid row")
            click.echo(f"nothing enqueued: {invalid}", err=True)
        else:
            _say_enqueued(result.batch_id, result.accepted, result.held, result.trade_nos)
            if result.held_reason:
                click.echo(f"held: {result.held_reason}")
            if result.rejected:
                click.echo(f"{plural(len(result.rejected), 'row')} skipped")
    if result.rejected and not skip_invalid:
        raise click.exceptions.Exit(1)


def _say_duplicate(batch_id: str, at_ms: int | None, key: str | None) -> None:
    from worker.flows import report

    same = f"idempotency key {key}" if key is not None else "same file"
    click.echo(
        f"duplicate of batch {batch_id} enqueued at {report.iso_utc(at_ms)} ({same}): "
        "nothing new stored or sent"
    )
    click.echo(
        f"follow it with `disburse status {batch_id} --watch`; "
        "--allow-duplicate enqueues the file again as a new batch"
    )


def _say_enqueued(batch_id: str, accepted: int, held: bool, trade_nos: list[str]) -> None:
    from worker.celery import runtime
    from worker.flows import report

    state = "held for approval" if held else "queued"
    if accepted or len(trade_nos) == accepted:
        click.echo(f"batch {batch_id}: {plural(accepted, 'payout')} {state}")
    else:
        click.echo("nothing new to pay: every row's reference was enqueued before")
    if len(trade_nos) > accepted:
        earlier = report.earlier_batches(runtime.ledger(), trade_nos, batch_id)
        for other, n in earlier.items():
            click.echo(
                f"  {plural(n, 'row')} already enqueued in batch {other} (same reference, "
                f"not paid again): `disburse status {other}`"
            )
    if held and accepted:
        click.echo(f"release it with `disburse approve {batch_id}`")
    elif accepted:
        click.echo(f"follow it with `disburse status {batch_id} --watch`")


@click.command()
@click.option("--market", type=MARKET, help="One market (default: every market).")
def fields(market: str | None) -> None:
    """The columns of each market's rows file, as Markdown tables.

    Each column's name, whether it is required, its format and an example. Read
    from the schemas that validate the rows, so it is always what `enqueue` checks.

    \b
    Example:
      disburse fields --market JP
    """
    from worker.core.columns import reference_table

    for index, code in enumerate([market] if market else list(MARKETS)):
        if index:
            click.echo()
        click.echo(f"{code}\n\n{reference_table(code)}")


@click.command()
@click.option("--market", required=True, type=MARKET, help="The market of the sample rows.")
@click.option("--output", "-o", type=OUTPUT, help="Write to this file instead of stdout.")
def template(market: str, output: Path | None) -> None:
    """Write a sample rows file that `disburse enqueue` accepts.

    A CSV file with the market's header and three made-up payouts. Replace the rows
    with yours (`disburse fields` describes each column); empty optional cells are
    fine.

    \b
    Examples:
      disburse template --market ID -o payouts.csv
      disburse enqueue payouts.csv --market ID --dry-run
    """
    from worker.core.columns import template_csv

    with writing(output) as out:
        out.write(template_csv(market))
    if output is not None:
        click.echo(f"wrote the {market} template to {output}", err=True)
