"""Commands on stored batches: where one stands, export it, approve, cancel, and list
them."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import click

from worker.cli.common import OUTPUT, UserError, parse_since, pause_text, writing
from worker.core.text import plural

if TYPE_CHECKING:
    from worker.ledger import BatchSummary


def _no_batch(batch: str) -> UserError:
    return UserError(f"no batch {batch} (`disburse batches` lists them)")


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
    from worker.flows import report

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
    from worker.cli.unreachable import SERVER_ERRORS, server_error

    try:
        return _pause_of(market)
    except SERVER_ERRORS as exc:
        click.echo(f"warning: pause state unknown: {server_error(exc)}", err=True)
        return None


def _watch(batch: str, market: str, interval: float) -> BatchSummary:
    from rich.console import Console

    from worker.celery import runtime
    from worker.cli.unreachable import SERVER_ERRORS, server_error
    from worker.cli.watch import Snapshot, held_text
    from worker.cli.watch import watch as follow
    from worker.core.states import State
    from worker.flows import report

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
    from worker.flows import report

    ledger = runtime.ledger()
    if ledger.batch(batch) is None:
        raise _no_batch(batch)
    with writing(output) as out:
        rows = report.export_csv(ledger, [batch], out)
    if output is not None:
        click.echo(f"wrote {plural(rows, 'payout')} to {output}")


@click.command()
@click.argument("batch")
@click.option("--operator", help="Who approves (default: DISBURSE_OPERATOR, else the login name).")
@click.option("--note", help="Why (recorded in the audit trail; required by --override-limit).")
@click.option("--override-limit", is_flag=True, help="Let the batch past the market's daily limit.")
@click.option("--no-balance-check", is_flag=True, help="Release without checking the balance.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def approve(
    batch: str,
    operator: str | None,
    note: str | None,
    override_limit: bool,
    no_balance_check: bool,
    as_json: bool,
) -> None:
    """Approve a held BATCH; it is released once nothing else holds it.

    BATCH waits HELD for approvals (--hold, or the band of DISBURSE_POLICY it meets),
    its schedule, the provider balance, or the market's daily limit. Each approval is
    another person's, never the batch's creator's; the command says how many remain.

    Exits 2 when the batch stays held.

    \b
    Examples:
      disburse approve b1f0c2d3e4a5b6c7 --operator alice
      disburse approve b1f0c2d3e4a5b6c7 --override-limit --note "month end, agreed"
    """
    import worker

    try:
        result = worker.approve(
            batch,
            check_balance=not no_balance_check,
            operator=operator,
            note=note,
            override_limit=override_limit,
        )
    except worker.BatchNotFound:
        raise _no_batch(batch) from None
    except worker.ApprovalRefused as exc:
        raise UserError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(result.message)
        if result.approvals_remaining:
            given = ", ".join(result.approvals) or "none"
            click.echo(
                f"approvals: {len(result.approvals)} of {result.approvals_needed} "
                f"(given by {given}); {result.approvals_remaining} more needed"
            )
    if result.held is not None:
        raise click.exceptions.Exit(2)


@click.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--operator", help="Who cancels (default: DISBURSE_OPERATOR, else the login name).")
def cancel(batch: str, as_json: bool, operator: str | None) -> None:
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
        result = worker.cancel(batch, operator)
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
    from worker.flows import report

    found = runtime.ledger().batches(
        since_ms=_ms(parse_since(since)),
        state=cast(Literal["held", "open", "settled"] | None, state),  # a click.Choice
        limit=limit,
    )
    for summary in found:
        data = summary.to_dict()
        data["created"] = report.iso_utc(summary.created_ms)
        data["state"] = report.batch_state(summary.counts)
        data["settled"] = summary.settled  # the key `status --json` has had since the start
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
