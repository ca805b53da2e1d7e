"""Payout row validation: one marshmallow schema per market, and the registry of them.

``validate_row`` turns one input row (a CSV or JSON Lines record in the market's field
names, plus the optional ``reference`` and ``currency`` columns) into a :class:`Payout`
whose ``fields`` are exactly the strings to send to the provider; ``validate_rows``
does a whole batch and reports every bad row rather than stopping at the first
(``iter_valid`` does the same row by row, for a caller that stores rows as they pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from urllib.parse import urlsplit

import marshmallow
from marshmallow import ValidationError

from schemas.ar import ArgentinaSchema
from schemas.fields import PayoutSchema
from schemas.id import IndonesiaSchema
from schemas.jp import JapanSchema
from schemas.kh import CambodiaSchema

__all__ = [
    "MARKETS",
    "Payout",
    "RowError",
    "ValidationError",
    "iter_valid",
    "market_code",
    "validate_row",
    "validate_rows",
]

_SCHEMA_CLASSES: tuple[type[PayoutSchema], ...] = (
    IndonesiaSchema,
    ArgentinaSchema,
    JapanSchema,
    CambodiaSchema,
)

MARKETS: dict[str, type[marshmallow.Schema]] = {cls.market: cls for cls in _SCHEMA_CLASSES}
# One instance per market, built once: marshmallow schemas keep no per-load state.
_SCHEMAS: dict[str, PayoutSchema] = {cls.market: cls() for cls in _SCHEMA_CLASSES}


@dataclass(frozen=True, slots=True)
class Payout:
    """One validated payout, ready to be persisted and sent."""

    market: str  # "ID" | "AR" | "JP" | "KH"
    currency: str  # e.g. "IDR"; in Cambodia the row's currency column
    amount: Decimal  # exact, with the currency's number of decimals
    reference: str | None  # the application's idempotency key, if given
    fields: dict[str, str]  # what is sent, minus tradeNo, timestamp and sign


@dataclass(frozen=True, slots=True)
class RowError:
    """Every problem found in one row, by field name (``_schema`` for the row as a whole)."""

    row: int
    errors: dict[str, list[str]]


def market_code(market: object) -> str | None:
    """``market`` as a key of ``MARKETS`` (any case, spaces around ignored); None if none.

    Callers check the code with this first and raise their own error for a bad one
    (``worker.core.exceptions.UnknownMarket``: this package sits below ``worker``).
    """
    code = market.strip().upper() if isinstance(market, str) else None
    return code if code in _SCHEMAS else None


def _schema(market: str) -> PayoutSchema:
    code = market_code(market)
    if code is None:
        raise ValueError(f"unknown market {market!r}: check it with market_code() first")
    return _SCHEMAS[code]


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=64)
def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of ``url``, the port None when it is the scheme's default;
    None when ``url`` has no host (the field's own check reports it)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        return None
    return scheme, parts.hostname, None if port == _DEFAULT_PORTS.get(scheme) else port


def _foreign_notify_url(url: str, notify_url: str) -> str | None:
    """Why a row's own ``url`` is refused: the provider would post this payout's outcome
    to a host other than ``notify_url``'s (NOTIFY_URL, this system's receiver); None if
    it is on that host and port (https in place of http allowed)."""
    own, ours = _origin(url), _origin(notify_url)
    if own is None or ours is None:
        return None
    scheme_fits = own[0] == ours[0] or (own[0], ours[0]) == ("https", "http")
    if own[1:] == ours[1:] and scheme_fits:
        return None
    host = ours[1] if ":" not in ours[1] else f"[{ours[1]}]"
    where = f"{ours[0]}://{host}" + (f":{ours[2]}" if ours[2] is not None else "")
    return (
        f"Must be on the host of the NOTIFY_URL setting ({where}): "
        "the provider posts the payout's outcome there."
    )


def _load(schema: PayoutSchema, row: Mapping[str, object], notify_url: str | None) -> Payout:
    foreign: str | None = None
    if notify_url and isinstance(row, Mapping):
        own = row.get("notifyUrl")
        if _blank(own):
            row = {**row, "notifyUrl": notify_url}
        elif isinstance(own, str):
            foreign = _foreign_notify_url(own, notify_url)
    try:
        data = schema.load_row(row)
    except ValidationError as exc:
        if foreign is not None and isinstance(exc.messages, dict):
            exc.messages.setdefault("notifyUrl", [foreign])
        raise
    if foreign is not None:
        raise ValidationError({"notifyUrl": [foreign]}, valid_data=data)
    amount: Decimal = data.pop("amount")
    currency: str = data.pop("currency")
    reference: str | None = data.pop("reference", None)
    data["amount"] = format(amount, "f")
    return Payout(schema.market, currency, amount, reference, data)


def validate_row(
    market: str, row: Mapping[str, object], *, notify_url: str | None = None
) -> Payout:
    """Validate one row for ``market`` (any case: ``"id"`` is ``"ID"``).

    ``notify_url`` is sent as ``notifyUrl`` when the row has none. Raises
    ``marshmallow.ValidationError`` (``.messages`` maps field -> messages) for a bad
    row and ``ValueError`` for a market code :func:`market_code` does not know.
    """
    return _load(_schema(market), row, notify_url)


def _messages(error: ValidationError) -> dict[str, list[str]]:
    messages = error.messages
    if not isinstance(messages, dict):
        return {"_schema": [str(m) for m in messages]}
    return {
        str(key): [str(m) for m in value] if isinstance(value, list) else [str(value)]
        for key, value in messages.items()
    }


def validate_rows(
    market: str,
    rows: Iterable[tuple[int, Mapping[str, object]]],
    *,
    notify_url: str | None = None,
) -> tuple[list[tuple[int, Payout]], list[RowError]]:
    """Validate every ``(row number, row)``; returns the valid payouts and every row's errors.

    A reference is one payout: a row repeating the reference of an earlier row (valid
    or not) is an error naming that row, since nobody can tell which of the two was
    meant. Each row's reference is compared once it is well formed.
    """
    errors: list[RowError] = []
    valid = list(iter_valid(market, rows, errors, notify_url=notify_url))
    return valid, errors


def iter_valid(
    market: str,
    rows: Iterable[tuple[int, Mapping[str, object]]],
    errors: list[RowError],
    *,
    notify_url: str | None = None,
) -> Iterator[tuple[int, Payout]]:
    """:func:`validate_rows` row by row: yields each valid row's ``(row number, payout)``
    as soon as it is validated, and appends each bad row's errors to ``errors``. The
    market code is checked at the call, before the first row."""
    schema = _schema(market)
    return _valid(schema, rows, errors, notify_url)


def _valid(
    schema: PayoutSchema,
    rows: Iterable[tuple[int, Mapping[str, object]]],
    errors: list[RowError],
    notify_url: str | None,
) -> Iterator[tuple[int, Payout]]:
    first_rows: dict[str, int] = {}  # reference -> the row it first appeared in
    for number, row in rows:
        payout: Payout | None = None
        messages: dict[str, list[str]] = {}
        try:
            payout = _load(schema, row, notify_url)
            reference = payout.reference
        except ValidationError as exc:
            messages = _messages(exc)
            reference = _loaded_reference(exc)
        if reference in first_rows:
            message = f"Same reference as row {first_rows[reference]}."
            messages.setdefault("reference", []).append(message)
        elif reference is not None:
            first_rows[reference] = number
        if payout is not None and not messages:
            yield number, payout
        else:
            errors.append(RowError(number, messages))


def _loaded_reference(error: ValidationError) -> str | None:
    """The reference of a row that failed on other fields (None if it is itself bad)."""
    loaded = error.valid_data
    reference = loaded.get("reference") if isinstance(loaded, dict) else None
    return reference if isinstance(reference, str) else None
