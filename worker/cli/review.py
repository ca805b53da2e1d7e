"""Commands for what the automation leaves to a person: the orders in REVIEW, a decision
on one (checked with the provider first), and the retry of what failed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from worker.cli.common import SystemProblem, UserError, echo_row_errors
from worker.core.exceptions import InputError, ProviderError, RateLimitTimeout


@click.command()
@click.option("--batch", help="Only this batch's orders.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per order.")
def review(batch: str | None, as_json: bool) -> None:
    """List the payouts waiting for a person (REVIEW), the longest waiting first, with
    why and what the provider last said.

    \b
    Decide one with:
      disburse resolve REF_OR_TRADENO --failed --note "no record at the bank"
    """
    import worker

    try:
        orders = worker.review(batch)
    except InputError as exc:
        raise UserError(str(exc)) from None
    for order in orders:
        since = datetime.fromtimestamp((order.state_entered_ms or 0) / 1000, UTC)
        item = {
            "trade_no": order.trade_no,
            "reference": order.reference,
            "batch_id": order.batch_id,
            "market": order.market,
            "currency": order.currency,
            "amount": str(order.amount),
            "since": since.isoformat(timespec="seconds"),
            "reason": order.reason,
            "platform_trade_no": order.platform_trade_no,
            "provider_status": order.provider_status,
            "provider_message": order.provider_message,
        }
        if as_json:
            click.echo(json.dumps(item))
            continue
        said = " ".join(filter(None, (order.provider_status, order.provider_message)))
        click.echo(
            f"{order.trade_no}  reference {order.reference or '-'}  batch {order.batch_id}  "
            f"{order.amount} {order.currency}  "
            f"since {item['since']}\n  why: {order.reason or '-'}\n  provider: {said or '-'}"
        )
    if not orders and not as_json:
        click.echo("no payout waits for a person")


@click.command()
@click.argument("key", metavar="REF_OR_TRADENO")
@click.option("--succeeded", is_flag=True, help="The payout was paid.")
@click.option("--failed", is_flag=True, help="The payout was not paid.")
@click.option("--note", required=True, help="What was checked; kept in the order's history.")
@click.option("--operator", help="Who decides (default: DISBURSE_OPERATOR, else the login name).")
def resolve(key: str, succeeded: bool, failed: bool, note: str, operator: str | None) -> None:
    """Decide a payout in REVIEW: --succeeded or --failed.

    The payout is named by its reference or its tradeNo. The provider is asked first: a
    decision its answer contradicts is refused (exit 1) with what it said, and nothing
    changes.
    """
    import worker
    from worker.celery import runtime

    if succeeded == failed:
        raise click.UsageError("say either --succeeded or --failed" + (", not both" * failed))
    found = runtime.ledger().find(key)
    if found is None:
        raise UserError(f"no payout with the reference or tradeNo {key!r}")
    try:
        order = worker.resolve(
            found.trade_no, "SUCCEEDED" if succeeded else "FAILED", note=note, operator=operator
        )
    except InputError as exc:
        raise UserError(str(exc)) from None
    except (ProviderError, RateLimitTimeout) as exc:
        raise SystemProblem(
            f"could not ask the provider about {found.trade_no} ({type(exc).__name__}: {exc}); "
            "nothing changed, try again"
        ) from None
    said = " ".join(filter(None, (order.provider_status, order.provider_message)))
    click.echo(
        f"{order.trade_no} (reference {order.reference or '-'}): {order.state} "
        f"(the provider says {said or 'no record'})"
    )


@click.command()
@click.argument("batch")
@click.option("--hold", is_flag=True, help="Create the new batch HELD until `disburse approve`.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def retry(batch: str, hold: bool, as_json: bool) -> None:
    """Enqueue BATCH's FAILED and REVERSED payouts again, as a new batch.

    Each gets a new tradeNo and a link to the payout it retries; a payout is retried at
    most once, and only while it keeps its fields (FAILED_PAYLOAD_RETENTION). Nothing is
    enqueued when one is no longer valid (exit 1). A payout whose fields are erased (a
    REVERSED one's went when it succeeded) is listed as not retried, and exits 1 too:
    enqueue it again from your records under a new reference.

    The provider is asked about each payout first (details API and status query): one it
    does not confirm failed is not retried, with what it said, and exits 1.
    """
    import worker

    try:
        result = worker.retry(batch, hold=hold)
    except InputError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        echo_row_errors(result.rejected)
        if result.not_retried:
            from worker.celery import runtime

            named = list(result.not_retried)
            found = runtime.ledger().get_many(named)
            references = {t: o.reference for t, o in zip(named, found, strict=True) if o}
            for trade_no, why in result.not_retried.items():
                reference = references.get(trade_no) or "-"
                click.echo(f"{trade_no} (reference {reference}): not retried: {why}")
        if result.batch_id is not None:
            state = "held for approval" if result.held else "queued"
            line = f"batch {result.batch_id}: {result.accepted} payouts of {batch} {state} again"
            line += f", {result.existing} retried meanwhile" if result.existing else ""
            click.echo(line)
        elif result.rejected:
            click.echo(f"nothing enqueued: {len(result.rejected)} invalid payouts", err=True)
        elif not result.erased:
            click.echo(f"nothing to retry in batch {batch}")
        if result.erased:
            click.echo(
                f"{len(result.erased)} payouts of {batch} not retried, their fields erased: "
                "enqueue them again from your records",
                err=True,
            )
        if result.refused:
            click.echo(
                f"{len(result.refused)} payouts of {batch} not retried: the provider does not "
                "confirm they failed (see above)",
                err=True,
            )
    # Payouts left unpaid that this command cannot send again: the user must act.
    if result.rejected or result.erased or result.refused:
        raise click.exceptions.Exit(UserError.exit_code)
