"""The details API's answers, parsed (seed 003): one disbursement, a page of the list.

Any answer in, never a crash out: a row without an id or with an amount that is not a
number is OutcomeUnknown (a page leaves such a row out and says why), a page that is
not the one asked for is ProviderError. Spellings seen in the wild (flat or nested
``data``, ``pagination`` or ``meta``, snake_case or camelCase) are all read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.core.exceptions import (
    OutcomeUnknown,
    ProviderError,
)
from worker.core.states import State
from worker.provider.answers import to_decimal

DEFAULT_PER_PAGE = 25  # PROVIDERS.md: 25 rows a page
STATES: Mapping[str, State] = {
    "success": State.SUCCEEDED,
    "failed": State.FAILED,
    "pending": State.PROCESSING,
}


@dataclass(frozen=True, slots=True)
class Disbursement:
    transaction_id: str
    status: str  # raw: "success" | "failed" | "pending" | other
    state: State | None  # SUCCEEDED / FAILED / PROCESSING (pending); None if unrecognised
    amount: Decimal | None
    currency: str | None
    total_amount: Decimal | None
    fees: tuple[Decimal, ...]
    posted_at_ms: int | None
    processed_at_ms: int | None
    notes: str | None
    # The currency of total_amount, and the one currency of every fee (None when the
    # fees name several); one left out is the amount's.
    total_currency: str | None = None
    fee_currency: str | None = None


def _money(value: Any, field: str) -> tuple[Decimal | None, str | None]:
    """An ``{value, currency}`` object (or a bare number) as (Decimal, currency)."""
    currency = None
    if isinstance(value, Mapping):
        raw_currency = value.get("currency")
        currency = raw_currency if isinstance(raw_currency, str) and raw_currency else None
        value = value.get("value")
    try:
        return to_decimal(value), currency
    except ValueError:
        raise OutcomeUnknown(f"details: {field} is not a number") from None


def _millis(value: Any) -> int | None:
    """A Unix-ms timestamp (string or number); None when absent or unparseable."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            return int(Decimal(str(value).strip()))
        except (ArithmeticError, ValueError):
            return None


def parse_disbursement(row: Mapping[str, Any]) -> Disbursement:
    """One disbursement object; OutcomeUnknown if it has no id or a malformed amount."""
    raw_id = row.get("transaction_id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise OutcomeUnknown("details: a disbursement without transaction_id")
    raw_status = row.get("status")
    status = (
        raw_status if isinstance(raw_status, str) else "" if raw_status is None else str(raw_status)
    )
    amount, currency = _money(row.get("amount"), "amount")
    total, total_currency = _money(row.get("total_amount"), "total_amount")
    fees_raw = row.get("fees")
    fees: list[Decimal] = []
    fee_currencies: set[str | None] = set()
    if isinstance(fees_raw, list):
        for fee in fees_raw:
            value, fee_currency = _money(fee, "fees")
            if value is not None:
                fees.append(value)
                fee_currencies.add(fee_currency or currency)
    notes = row.get("notes")
    return Disbursement(
        transaction_id=str(raw_id),
        status=status,
        state=STATES.get(status.strip().lower()),
        amount=amount,
        currency=currency or total_currency,
        total_amount=total,
        fees=tuple(fees),
        posted_at_ms=_millis(row.get("post_timestamp")),
        processed_at_ms=_millis(row.get("processed_timestamp")),
        notes=notes if isinstance(notes, str) else None,
        total_currency=total_currency or currency,
        fee_currency=fee_currencies.pop() if len(fee_currencies) == 1 else None,
    )


def unwrap_row(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The disbursement object of a details answer, flat or nested (seed 003's example)."""
    data = body.get("data")
    for _ in range(3):  # flat: data is the row; nested: data.data is the row
        if not isinstance(data, dict):
            return None
        if "transaction_id" in data:
            return data
        data = data.get("data")
    return None


_CURRENT = ("current_page", "currentPage", "page")
_LAST = ("last_page", "lastPage", "total_pages", "totalPages")
_PER_PAGE = ("per_page", "perPage", "page_size", "pageSize", "limit")


def _int(meta: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first of ``keys`` holding a whole number (2, "2", 2.0); None if none does."""
    for key in keys:
        value = meta.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            continue
        try:
            number = Decimal(str(value).strip())
        except ArithmeticError:
            continue
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
    return None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of the disbursement list, newest first.

    ``rows`` are the disbursements that parsed; ``skipped`` says, for every row that
    did not (no id, a non-numeric amount, not an object), why: such a row is left out
    rather than failing the page. ``more`` is whether a further page may hold rows:
    the current page is below the last one the answer names, or, when it names none,
    the page came back full (``per_page``, else 25 rows).
    """

    number: int
    rows: tuple[Disbursement, ...]
    skipped: tuple[str, ...]
    more: bool


def parse_page(body: Mapping[str, Any], number: int, what: str) -> ListPage:
    """Rows and paging metadata of a list answer, in any of the spellings seen.

    Rows: ``data`` as a list, or ``data.items`` / ``data.data``. Metadata:
    ``pagination`` or ``meta``, top level or inside ``data``, snake_case or
    camelCase, or ``{}``/absent.
    """
    data = body.get("data")
    containers: list[Mapping[str, Any]] = [body]
    raw_rows: Any = data
    if isinstance(data, dict):
        containers.append(data)
        raw_rows = next((data[k] for k in ("items", "data") if isinstance(data.get(k), list)), None)
    if not isinstance(raw_rows, list):
        raise OutcomeUnknown(f"{what}: no list of disbursements in the answer")
    meta: dict[str, Any] = {}
    for container in containers:
        for key in ("pagination", "meta"):
            found = container.get(key)
            if isinstance(found, dict):
                meta = {**found, **meta}
    current, last = _int(meta, _CURRENT), _int(meta, _LAST)
    if current is not None and current != number:
        raise ProviderError(f"{what}: the provider answered page {current}")
    rows: list[Disbursement] = []
    skipped: list[str] = []
    for index, row in enumerate(raw_rows, start=1):
        try:
            if not isinstance(row, Mapping):
                raise OutcomeUnknown("details: a row that is not an object")
            rows.append(parse_disbursement(row))
        except OutcomeUnknown as exc:
            skipped.append(f"{what}, row {index}: {str(exc).removeprefix('details: ')}")
    if not raw_rows:
        more = False
    elif last is not None:
        more = number < last
    else:
        more = len(raw_rows) >= (_int(meta, _PER_PAGE) or DEFAULT_PER_PAGE)
    return ListPage(number, tuple(rows), tuple(skipped), more)
