"""Commands on batches: enqueue a file, see where it stands, export it, approve, cancel,
list batches, and the columns each market's file takes."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, cast

import click

from schemas import MARKETS
from worker.cli.common import UserError, echo_row_errors, pause_text
from worker.core.exceptions import InputError, InvalidFile
from worker.core.text import plural

if TYPE_CHECKING:
    from worker.ledger import BatchSummary

MARKET = click.Choice(list(MARKETS), case_sensitive=False)
OUTPUT = click.Path(dir_okay=False, writable=True, path_type=Path)
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@contextlib.contextmanager
def _writing(path: Path | None) -> Iterator[IO[str]]:
    """``path`` opened for a CSV (stdout without one); a file error names the path."""
    if path is None:
        yield sys.stdout
        return
    try:
        out = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    with out:
        yield out


def _no_batch(batch: str) -> UserError:
    return UserError(f"no batch {batch} (`disburse batches` lists them)")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
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
def enqueue(
    file: Path,
    market: str,
    skip_invalid: bool,
    dry_run: bool,
    hold: bool,
    as_json: bool,
    idempotency_key: str | None,
    allow_duplicate: bool,
) -> None:
    """Validate FILE and enqueue its payouts as one batch.

    FILE is CSV (comma, semicolon or tab separated, UTF-8, a header row) or JSON Lines
    (.jsonl: one object per line), in the market's column names: `disburse fields
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

    \b
    Examples:
      disburse enqueue payouts.csv --market ID
      disburse enqueue payouts.csv --market JP --dry-run
      disburse enqueue payouts.jsonl --market KH --hold --json
    """
    from worker.celery import runtime
    from worker.core.columns import check_columns
    from worker.core.rows import read_bytes, read_rows
    from worker.idempotency import file_key

    if allow_duplicate and idempotency_key is not None:
        raise click.UsageError("--allow-duplicate and --idempotency-key exclude each other")
    given_key = idempotency_key
    try:
        raw = read_bytes(file)
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
            if result.rejected:
                click.echo(f"{plural(len(result.rejected), 'row')} skipped")
    if result.rejected and not skip_invalid:
        raise click.exceptions.Exit(1)


def _say_duplicate(batch_id: str, at_ms: int | None, key: str | None) -> None:
    from worker.cli import report

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
    from worker.cli import report

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


def _pause_of(market: str) -> dict[str, str] | None:
    """What stops the submissions of ``market``: the cluster-wide or its account's switch,
    why, who set it (an operator, ``systemic-code``, ``circuit-breaker``) and since when."""
    from worker.celery import runtime
    from worker.coordination.pause import ALL
    from worker.core.config import get_settings

    paused = runtime.pause_switch().records()
    names = [ALL]
    # A market this configuration does not know has only the cluster-wide switch.
    with contextlib.suppress(ValueError):
        names.append(get_settings().account(market).name)
    record = next((paused[n] for n in names if n in paused), None)
    if record is None:
        return None
    since = record.since.isoformat() if record.since is not None else ""
    return {"account": record.scope, "reason": record.reason, "who": record.who, "since": since}


@click.command()
@click.argument("batch")
@click.option(
    "--watch", is_flag=True, help="Follow the batch with a progress bar until it is settled."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between updates of --watch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.option("--counts-only", is_flag=True, help="Skip the per-order details (faster).")
def status(batch: str, watch: bool, interval: float, as_json: bool, counts_only: bool) -> None:
    """Where BATCH stands; --watch follows it with a progress bar.

    Its payouts and amounts per state, the reasons of FAILED and REVIEW payouts,
    discrepancies, and whether submissions are paused. BATCH is the id `disburse
    enqueue` printed (`disburse batches` lists them).
    --watch draws a progress bar (settled of total, rate, time left) on a terminal, or
    one line per interval when the output is a file or a pipe, and ends when every
    payout is settled (final or REVIEW) or the batch is held.

    \b
    Examples:
      disburse status b1f0c2d3e4a5b6c7
      disburse status b1f0c2d3e4a5b6c7 --watch
      disburse status b1f0c2d3e4a5b6c7 --json --counts-only
    """
    from worker.celery import runtime
    from worker.cli import report

    ledger = runtime.ledger()
    summary = ledger.batch(batch)
    if summary is None:
        raise _no_batch(batch)
    if watch:
        summary = _watch(batch, summary.market, interval)
    data = report.status_dict(ledger, summary, details=not counts_only)
    data["paused"] = _pause_or_warn(summary.market)
    if as_json:
        click.echo(json.dumps(data))
        return
    if not watch:
        click.echo(report.status_text(data))
    if data["paused"]:
        paused = data["paused"]
        said = pause_text(paused["account"], paused["reason"])
        click.echo(f"PAUSED: {said} (by {paused['who']})")


def _pause_or_warn(market: str) -> dict[str, str] | None:
    """The pause switch, or None and a warning when Redis cannot be read (the counts
    come from PostgreSQL and are still worth showing)."""
    from worker.cli.watch import SERVER_ERRORS, server_error

    try:
        return _pause_of(market)
    except SERVER_ERRORS as exc:
        click.echo(f"warning: pause state unknown: {server_error(exc)}", err=True)
        return None


def _watch(batch: str, market: str, interval: float) -> BatchSummary:
    from rich.console import Console

    from worker.celery import runtime
    from worker.cli import report
    from worker.cli.watch import SERVER_ERRORS, Snapshot, held_text, server_error
    from worker.cli.watch import watch as follow
    from worker.core.states import State

    ledger = runtime.ledger()

    def read() -> Snapshot:
        summary = ledger.batch(batch)
        assert summary is not None  # batches are never deleted
        try:
            return Snapshot(summary, _pause_of(market))
        except SERVER_ERRORS as exc:
            return Snapshot(summary, None, server_error(exc))

    try:
        summary, seconds = follow(read, interval=interval, console=Console())
    except KeyboardInterrupt:
        click.echo(f"stopped watching; the batch goes on (`disburse status {batch}`)", err=True)
        raise click.exceptions.Exit(130) from None
    if summary.counts.get(State.HELD):
        click.echo(held_text(summary))
        return summary
    click.echo(
        f"batch {summary.batch_id} settled: {plural(summary.total, 'payout')} "
        f"({report.counts_text(summary)}), watched for {seconds:.0f} s"
    )
    failed = summary.counts.get(State.FAILED, 0) + summary.counts.get(State.REVIEW, 0)
    if failed:
        click.echo(f"why each FAILED or REVIEW payout is there: `disburse export {batch} -o FILE`")
    return summary


@click.command()
@click.argument("batch")
@click.option("--output", "-o", type=OUTPUT, help="Write to this file instead of stdout.")
def export(batch: str, output: Path | None) -> None:
    """One CSV row per payout of BATCH, for people and spreadsheets.

    Columns: reference, tradeNo, batchId, market, currency, amount, fee,
    feeCurrency, totalDebited, totalDebitedCurrency (from the details API), state,
    reason (why a payout is FAILED, REVIEW or REVERSED), platformTradeNo (the
    provider's id), providerStatus (the provider's last word: SUCCEEDED, PROCESSING
    or FAILED),
    providerMessage, attempts, createdAt, updatedAt (ISO-8601, UTC). A cell starting
    with = + - @ is written with a leading ' so a spreadsheet shows it as text.
    Account numbers, names and phones are never exported.

    \b
    Examples:
      disburse export b1f0c2d3e4a5b6c7 -o results.csv
      disburse export b1f0c2d3e4a5b6c7 | grep FAILED
    """
    from worker.celery import runtime
    from worker.cli import report

    ledger = runtime.ledger()
    if ledger.batch(batch) is None:
        raise _no_batch(batch)
    with _writing(output) as out:
        rows = report.export_csv(ledger, [batch], out)
    if output is not None:
        click.echo(f"wrote {plural(rows, 'payout')} to {output}")


@click.command()
@click.argument("batch")
@click.option("--no-balance-check", is_flag=True, help="Release without checking the balance.")
def approve(batch: str, no_balance_check: bool) -> None:
    """Release a held BATCH once the provider balance covers it.

    BATCH was enqueued with --hold; its payouts wait as HELD until this command.

    Exits 2 when the batch stays held (the balance is short, or cannot be read).

    \b
    Example:
      disburse approve b1f0c2d3e4a5b6c7
    """
    import worker

    try:
        result = worker.approve(batch, check_balance=not no_balance_check)
    except worker.BatchNotFound:
        raise _no_batch(batch) from None
    click.echo(result.message)
    if result.held is not None:
        raise click.exceptions.Exit(2)


@click.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def cancel(batch: str, as_json: bool) -> None:
    """Cancel the payouts of BATCH never sent to the provider (HELD, or QUEUED and
    never POSTed).

    A payout a POST may have reached the provider with is not cancelled: it goes on
    to a final state through the provider, and is listed (--json: `not_cancelled`).

    \b
    Examples:
      disburse cancel b1f0c2d3e4a5b6c7
      disburse cancel b1f0c2d3e4a5b6c7 --json
    """
    import worker

    try:
        result = worker.cancel(batch)
    except worker.BatchNotFound:
        raise _no_batch(batch) from None
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(result.message)
    kept = list(result.not_cancelled.items())
    for trade_no, state in kept[:_LISTED]:
        click.echo(f"  not cancelled: {trade_no} ({state})")
    if len(kept) > _LISTED:
        click.echo(f"  ... and {len(kept) - _LISTED} more (`disburse cancel {batch} --json`)")


# Payouts a command lists one per line before it says "and N more".
_LISTED = 20


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    match = _DURATION.fullmatch(value.strip())
    if match:
        ago = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return datetime.now(UTC) - ago
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            "a duration such as 30m, 12h or 7d, or a date such as 2026-12-01 or "
            "2026-12-01T09:00 (UTC unless it says)",
            param_hint="--since",
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _batch_state(counts: dict[Any, int]) -> str:
    from worker.core.states import SETTLED_STATES, State

    if counts.get(State.HELD):
        return "held"
    return "settled" if all(s in SETTLED_STATES for s in counts) else "open"


@click.command()
@click.option("--since", help="Only batches created since: 30m, 12h, 7d, or a date/time.")
@click.option(
    "--state",
    type=click.Choice(["held", "open", "settled"]),
    help="held: waits for approval; open: payouts on their way; settled: none left.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="At most this many batches.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def batches(since: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List batches, newest first, with their counts per state.

    \b
    Examples:
      disburse batches
      disburse batches --since 2d --state open
      disburse batches --since 2026-12-01 --json
    """
    from worker.celery import runtime
    from worker.cli import report

    found = runtime.ledger().batches(
        since_ms=_ms(_since(since)),
        state=cast(Literal["held", "open", "settled"] | None, state),  # a click.Choice
        limit=limit,
    )
    for summary in found:
        data = summary.to_dict()
        data["created"] = report.iso_utc(summary.created_ms)
        data["state"] = _batch_state(summary.counts)
        if as_json:
            click.echo(json.dumps(data))
            continue
        click.echo(
            f"{summary.batch_id}  {data['created'][:19]}Z  {summary.market:<2}  "
            f"{data['state']:<7}  {plural(summary.total, 'payout'):>14}  "
            f"{report.counts_text(summary)}"
        )
    if not found and not as_json:
        click.echo(
            "no batches" + (f" since {since}" if since else "") + (f" {state}" if state else "")
        )


def _ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


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

    with _writing(output) as out:
        out.write(template_csv(market))
    if output is not None:
        click.echo(f"wrote the {market} template to {output}", err=True)
