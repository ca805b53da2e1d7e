"""Where a batch stands, for people and scripts: status text, progress bar, CSV export."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import IO, Any

from worker.ledger import BatchSummary, Ledger, Order
from worker.states import State

EXPORT_COLUMNS = [
    "reference",
    "tradeNo",
    "market",
    "currency",
    "amount",
    "fee",
    "feeCurrency",
    "totalDebited",
    "totalDebitedCurrency",
    "state",
    "platformTradeNo",
    "providerStatus",
    "providerMessage",
    "reason",
    "attempts",
    "createdMs",
    "updatedMs",
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def batch_orders(ledger: Ledger, batch_id: str) -> Iterator[Order]:
    for page in ledger.iter_batch(batch_id):
        yield from (order for order in ledger.get_many(page) if order is not None)


def status_dict(ledger: Ledger, summary: BatchSummary, *, details: bool) -> dict[str, Any]:
    data = summary.to_dict()
    data["settled"] = summary.settled
    if details:
        review: list[dict[str, Any]] = []
        discrepancies: list[dict[str, Any]] = []
        markets: Counter[str] = Counter()
        for order in batch_orders(ledger, summary.batch_id):
            markets[f"{order.market} {order.state}"] += 1
            if order.state is State.REVIEW:
                review.append({"tradeNo": order.trade_no, "reason": order.reason})
            if order.discrepancy:
                discrepancies.append(
                    {
                        "tradeNo": order.trade_no,
                        "state": str(order.state),
                        "report": order.discrepancy,
                    }
                )
        data["by_market"] = dict(sorted(markets.items()))
        data["review"] = review
        data["discrepancies_list"] = discrepancies
    return data


def status_text(data: dict[str, Any]) -> str:
    lines = [f"batch {data['batch_id']}  ({data['market']})  {data['total']} payouts"]
    if data.get("held_reason"):
        lines.append(f"HELD: {data['held_reason']}")
    for state in State:
        n = data["counts"].get(str(state), 0)
        if n:
            # What the details API says they cost, next to the amounts.
            parts = [f"  {state:<11} {n:>8}", _money(data["amounts"], state)]
            for key in ("fees", "debited"):
                if money := _money(data[key], state):
                    parts.append(f"{key} {money}")
            lines.append("   ".join(parts))
    if data.get("by_market"):
        lines.append("by market:")
        lines += [f"  {key:<16} {n:>8}" for key, n in data["by_market"].items()]
    for item in data.get("review", [])[:50]:
        lines.append(f"REVIEW {item['tradeNo']}: {item['reason'] or ''}")
    for item in data.get("discrepancies_list", [])[:50]:
        lines.append(
            f"DISCREPANCY {item['tradeNo']}: is {item['state']}, reported {item['report']}"
        )
    lines.append("settled" if data["settled"] else "in progress")
    return "\n".join(lines)


def _money(sums: dict[str, dict[str, str]], state: State) -> str:
    """A state's sums per currency: ``100000 IDR, 50 USD``."""
    return ", ".join(f"{v} {c}" for c, v in sums.get(str(state), {}).items())


def progress_bar(done: int, total: int, width: int = 40, suffix: str = "") -> str:
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {suffix}"


def batch_progress(summary: BatchSummary) -> str:
    counts = " ".join(f"{s.value}:{n}" for s, n in summary.counts.items() if n)
    return progress_bar(summary.settled_count, summary.total, suffix=counts)


def export_cell(value: object) -> str:
    """``value`` as an export cell that a spreadsheet shows as text and never evaluates.

    A cell starting with ``= + - @``, a tab or a carriage return is a formula to a
    spreadsheet (CSV injection, OWASP), and references and provider messages may start
    so: such a cell gets a leading ``'``. Amounts are positive, so they stay numbers.
    """
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_csv(ledger: Ledger, batch_ids: Sequence[str], out: IO[str]) -> int:
    """One CSV row per payout of the batches; returns the number of rows."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    rows = 0
    orders = (order for batch_id in batch_ids for order in batch_orders(ledger, batch_id))
    for order in orders:
        cells = (
            order.reference,
            order.trade_no,
            order.market,
            order.currency,
            order.amount,
            order.fee,
            order.fee_currency,
            order.total_debited,
            order.total_debited_currency,
            order.state,
            order.platform_trade_no,
            order.provider_status,
            order.provider_message,
            order.reason,
            order.attempts,
            order.created_ms,
            order.updated_ms,
        )
        writer.writerow([export_cell(cell) for cell in cells])
        rows += 1
    return rows
