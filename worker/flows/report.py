"""Where a batch stands, for people and scripts: status text, progress bar, CSV export."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from worker.core.confirm import ORIGINAL_PAID
from worker.core.states import SETTLED_STATES, State
from worker.core.text import plural
from worker.ledger import PAGE, BatchSummary, Ledger, Order
from worker.provider.answers import PAYOUT_STATES
from worker.provider.disbursements import STATES as DETAILS_STATES

EXPORT_COLUMNS = [
    "reference",
    "tradeNo",
    "batchId",
    "market",
    "currency",
    "amount",
    "fee",
    "feeCurrency",
    "totalDebited",
    "totalDebitedCurrency",
    "state",
    "reason",
    "platformTradeNo",
    "providerStatus",
    "providerMessage",
    "attempts",
    "createdAt",
    "updatedAt",
]
# The provider's word for a payout's state, from any source (the payout API's data.status,
# a webhook, the details API): one vocabulary for the export's providerStatus.
_PROVIDER_STATES: Mapping[str, State] = {
    **PAYOUT_STATES,
    **{word.upper(): state for word, state in DETAILS_STATES.items()},
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_utc(ms: int | None) -> str:
    """Milliseconds since the epoch as ISO-8601 UTC, e.g. ``2026-12-01T16:47:00.123Z``."""
    if ms is None:
        return ""
    at = _EPOCH + timedelta(milliseconds=ms)  # exact: no float seconds
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def provider_status(order: Order) -> str:
    """The payout's state as the provider last reported it: SUCCEEDED, PROCESSING or
    FAILED, whatever the source's own word (``0000``, ``success``, ...); empty when the
    provider reported none (not sent yet, or it refused the request: see ``reason``)."""
    raw = (order.provider_status or "").strip().upper()
    state = _PROVIDER_STATES.get(raw)
    return str(state) if state is not None else ""


def reason(order: Order) -> str:
    """Why the order is where it is, for every FAILED, REVIEW and REVERSED order (and
    any other the system gave a reason)."""
    if order.reason:
        return order.reason
    message = f": {order.provider_message}" if order.provider_message else ""
    if order.state is State.FAILED:
        if order.provider_status and not provider_status(order):
            return f"refused by the provider: code {order.provider_status}{message}"
        return f"the provider reported the payout failed{message}"
    if order.state is State.REVIEW:
        return f"needs a person to check it with the provider{message}"
    if order.state is State.REVERSED:
        return f"the details API says the payout failed after it succeeded{message}"
    return ""


def batch_orders(ledger: Ledger, batch_id: str) -> Iterator[Order]:
    for page in ledger.iter_batch(batch_id):
        yield from (order for order in ledger.get_many(page) if order is not None)


def batch_state(counts: Mapping[State, int]) -> str:
    """A batch in one word: held (some payout waits for approval), settled, or open."""
    if counts.get(State.HELD):
        return "held"
    return "settled" if all(s in SETTLED_STATES for s in counts) else "open"


def status_dict(ledger: Ledger, summary: BatchSummary, *, details: bool) -> dict[str, Any]:
    data = summary.to_dict()
    data["settled"] = summary.settled
    data["state"] = batch_state(summary.counts)  # as `batches --json` says it
    data["created"] = iso_utc(summary.created_ms)
    hold = ledger.hold(summary.batch_id)
    if hold is not None:
        data["created_by"] = hold.created_by
        data["approvals_needed"] = hold.approvals_needed
        data["approvals"] = [{"who": who, "at": at.isoformat()} for who, at in hold.approvals]
        data["not_before"] = hold.not_before.isoformat() if hold.not_before else None
    if details:
        review: list[dict[str, Any]] = []
        discrepancies: list[dict[str, Any]] = []
        markets: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        # Retries stopped because the payout they retry was reported paid, by state.
        stopped: Counter[str] = Counter()
        for order in batch_orders(ledger, summary.batch_id):
            if order.retry_of and (order.reason or "").startswith(ORIGINAL_PAID):
                stopped[str(order.state)] += 1
            markets[f"{order.market} {order.state}"] += 1
            if order.state is State.REVIEW:
                review.append(
                    # trade_no as every command's JSON spells it; tradeNo kept for old readers
                    {"trade_no": order.trade_no, "tradeNo": order.trade_no, "reason": reason(order)}
                )
            if order.state is State.FAILED:
                failed[reason(order)] += 1
            if order.discrepancy:
                discrepancies.append(
                    {
                        "trade_no": order.trade_no,
                        "tradeNo": order.trade_no,
                        "state": str(order.state),
                        "report": order.discrepancy,
                    }
                )
        data["by_market"] = dict(sorted(markets.items()))
        data["review"] = review
        data["failed_reasons"] = dict(failed.most_common())
        data["discrepancies_list"] = discrepancies
        data["retries_stopped"] = dict(stopped)
    return data


def status_text(data: dict[str, Any]) -> str:
    lines = [
        f"batch {data['batch_id']}  ({data['market']})  {plural(data['total'], 'payout')}"
        f"  created {data.get('created') or '?'}"
    ]
    if data["counts"].get(str(State.HELD)):
        why = f" ({data['held_reason']})" if data.get("held_reason") else ""
        lines.append(f"HELD{why}: waits for `disburse approve {data['batch_id']}`")
    if data.get("approvals_needed"):
        given = ", ".join(a["who"] for a in data["approvals"]) or "none"
        lines.append(
            f"created by {data['created_by']}; approvals {len(data['approvals'])} of "
            f"{data['approvals_needed']} (given by {given})"
        )
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
    for why, n in list(data.get("failed_reasons", {}).items())[:20]:
        lines.append(f"FAILED {n:>6} x {why}")
    for item in data.get("review", [])[:50]:
        lines.append(f"REVIEW {item['tradeNo']}: {item['reason']}")
    if stopped := data.get("retries_stopped"):
        states = ", ".join(f"{n} {state}" for state, n in sorted(stopped.items()))
        lines.append(f"RETRIES STOPPED {states}: {ORIGINAL_PAID} after all")
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


def counts_text(summary: BatchSummary) -> str:
    """``SUCCEEDED 10  FAILED 2``: the states the batch has orders in, in the table's order."""
    return "  ".join(f"{s} {summary.counts[s]}" for s in State if summary.counts.get(s))


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
            order.batch_id,
            order.market,
            order.currency,
            format(order.amount, "f"),  # the string signed and sent (no 1E+5)
            order.fee,
            order.fee_currency,
            order.total_debited,
            order.total_debited_currency,
            order.state,
            reason(order),
            order.platform_trade_no,
            provider_status(order),
            order.provider_message,
            order.attempts,
            iso_utc(order.created_ms),
            iso_utc(order.updated_ms),
        )
        writer.writerow([export_cell(cell) for cell in cells])
        rows += 1
    return rows


def earlier_batches(ledger: Ledger, trade_nos: Sequence[str], batch_id: str) -> dict[str, int]:
    """The batches, other than ``batch_id``, holding orders of ``trade_nos`` (an enqueue's
    rows whose references were enqueued before), with how many each holds."""
    found: Counter[str] = Counter()
    for start in range(0, len(trade_nos), PAGE):
        page = ledger.get_many(trade_nos[start : start + PAGE])
        found.update(o.batch_id for o in page if o is not None and o.batch_id != batch_id)
    return dict(found.most_common())
