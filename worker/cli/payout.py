"""``disburse payout``: one payout found by its reference or tradeNo, with where it
stands, the provider's ids and last word, its masked beneficiary and its history
(operators' names and notes included)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import click

from worker.cli.common import UserError
from worker.ledger import Order
from worker.ledger.history import OrderEvent


def payout_dict(order: Order, history: list[OrderEvent]) -> dict[str, Any]:
    """The payout as ``--json`` prints it: snake_case keys, as every command's JSON."""
    return {
        "trade_no": order.trade_no,
        "reference": order.reference,
        "batch_id": order.batch_id,
        "market": order.market,
        "currency": order.currency,
        "amount": str(order.amount),
        "state": str(order.state),
        "attempts": order.attempts,
        "reason": order.reason,
        "platform_trade_no": order.platform_trade_no,
        "provider_status": order.provider_status,
        "provider_message": order.provider_message,
        "fee": str(order.fee) if order.fee is not None else None,
        "total_debited": str(order.total_debited) if order.total_debited is not None else None,
        "retry_of": order.retry_of,
        "beneficiary": dict(order.masked or {}),
        "history": [event.to_dict() for event in history],
    }


def _said(event: OrderEvent) -> str:
    """An event's facts in one line: who and what an operator noted first."""
    facts = dict(event.facts or {})
    first = [f"{k}: {facts.pop(k)}" for k in ("operator", "note") if k in facts]
    return "  ".join(first + [f"{k}: {v}" for k, v in facts.items()])


@click.command()
@click.argument("key", metavar="REF_OR_TRADENO")
@click.option("--json", "as_json", is_flag=True, help="Print the payout as one JSON object.")
def payout(key: str, as_json: bool) -> None:
    """One payout found by its reference or tradeNo: state, history, provider ids and
    operator notes.

    Its beneficiary is shown masked, as the ledger keeps it for display.

    \b
    Examples:
      disburse payout INV-2041
      disburse payout 0193a5c2e4f1a2b3c4d5e6f7a8b9c0d1 --json
    """
    from worker.celery import runtime

    ledger = runtime.ledger()
    order = ledger.find(key)
    if order is None:
        raise UserError(f"no payout with the reference or tradeNo {key!r}")
    history = ledger.history(order.trade_no)
    if as_json:
        click.echo(json.dumps(payout_dict(order, history)))
        return
    said = " ".join(filter(None, (order.provider_status, order.provider_message)))
    lines = [
        f"{order.trade_no}  reference {order.reference or '-'}  batch {order.batch_id}",
        f"  {order.state}  {format(order.amount, 'f')} {order.currency}  market {order.market}"
        f"  attempts {order.attempts}",
        f"  provider: {order.platform_trade_no or '-'}  {said or '-'}",
    ]
    if order.reason:
        lines.append(f"  why: {order.reason}")
    if order.masked:
        lines.append("  beneficiary: " + ", ".join(f"{k} {v}" for k, v in order.masked.items()))
    lines.append("history:")
    for event in history:
        move = f"{event.from_state} -> {event.to_state}" if event.from_state else event.to_state
        at = f"{event.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
        lines.append(f"  {at}  {event.source:<9} {move}  {_said(event)}".rstrip())
    click.echo("\n".join(lines))
