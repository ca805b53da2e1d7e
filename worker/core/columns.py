"""The columns of each market's rows file, read from its schema (``schemas/``).

One source for what a user is told about the columns: the field reference
(``disburse fields``, the README's tables), the sample file (``disburse template``)
and the one-line error for a file whose columns belong to another market. Each
column's format is read from its schema field, so the text cannot drift from the
rules that validate the rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError
from marshmallow import fields as mfields

from schemas import MARKETS
from schemas.fields import (
    Amount,
    Code,
    Currency,
    Digits,
    Email,
    Katakana,
    Mobile,
    Name,
    NotifyUrl,
    PayoutSchema,
    Reference,
    Remark,
    Text,
)
from worker.core.exceptions import InvalidFile
from worker.core.samples import sample_rows

# Filled in from the NOTIFY_URL setting when a row leaves it empty (worker.flows.producer).
DEFAULTED = {"notifyUrl": "NOTIFY_URL"}


@dataclass(frozen=True)
class Column:
    name: str
    required: bool
    format: str
    example: str


def _schema(market: str) -> PayoutSchema:
    schema = MARKETS[market]()
    assert isinstance(schema, PayoutSchema)
    return schema


def _names(market: str) -> set[str]:
    return set(_schema(market).load_fields)


def _amount_format(schema: PayoutSchema) -> str:
    rules = []
    for rule in schema.amount_rules.values():
        kind = "a whole number" if rule.places == 0 else f"up to {rule.places} decimals"
        floor = f", at least {rule.minimum}" if rule.minimum is not None else ""
        rules.append(f"{rule.currency}: {kind}{floor}")
    return f"plain decimal, no separators ({'; '.join(rules)})"


def _format(schema: PayoutSchema, name: str, field: mfields.Field[Any]) -> str:
    """What a value of ``field`` must look like, from the field's own settings."""
    described = field.metadata.get("description")
    if isinstance(described, str):
        return described
    pattern_error = str(field.error_messages.get("pattern", ""))
    match field:
        case Amount():
            return _amount_format(schema)
        case Currency():
            currencies = " or ".join(schema.amount_rules)
            return currencies if field.required else f"{currencies} (the default when empty)"
        case Reference():
            return f"your idempotency key, never sent: {pattern_error[8:].rstrip('.')}"
        case Mobile():
            return f"mobile number: {pattern_error.partition(': ')[2].rstrip('.')}"
        case Digits(max_length=n) if pattern_error.startswith("Must be exactly"):
            return f"exactly {n} digits"
        case Digits(max_length=n):
            return f"digits only, up to {n}"
        case Name(max_length=n):
            return f"a name, up to {n} characters"
        case Katakana():
            return "full-width Katakana, e.g. ヤマダ"
        case Code():
            return "upper-case code of letters, digits or _, e.g. EWALLET"
        case Email(max_length=n):
            return f"e-mail address, up to {n} characters"
        case NotifyUrl(https_only=https):
            scheme = "https:// URL" if https else "http:// or https:// URL"
            setting = DEFAULTED[name]
            return f"{scheme} on {setting}'s host; empty: the {setting} setting"
        case Remark(max_length=n):
            return f"free text returned by the provider, up to {n} characters"
        case Text(pattern=None, max_length=n):
            return f"text, up to {n} characters"
        case Text(max_length=n):
            return f"{pattern_error[8:].rstrip('.')}, up to {n} characters"
    return ""


def _order(schema: PayoutSchema, example: Mapping[str, str]) -> list[str]:
    """The columns in the order of the sample row, then the optional rest."""
    return [*example, *(name for name in schema.load_fields if name not in example)]


def _examples(market: str, count: int) -> list[dict[str, Any]]:
    """Made-up valid rows (worker.core.samples) with references that name the market."""
    rows = sample_rows(market, count, seed=1)
    return [{**row, "reference": f"example-{market.lower()}-{i}"} for i, row in enumerate(rows, 1)]


def columns(market: str) -> list[Column]:
    """Every column ``market`` reads, in the order the template writes them; each example
    is the template's first row."""
    schema = _schema(market)
    (example,) = _examples(market, 1)
    return [
        Column(
            name,
            schema.load_fields[name].required and name not in DEFAULTED,
            _format(schema, name, schema.load_fields[name]),
            str(example.get(name, "")),
        )
        for name in _order(schema, example)
    ]


def reference_table(market: str) -> str:
    """The market's columns as a Markdown table (the README's field reference)."""
    lines = ["| column | required | format | example |", "| --- | --- | --- | --- |"]
    for column in columns(market):
        required = "yes" if column.required else "no"
        example = f"`{column.example}`" if column.example else ""
        lines.append(f"| `{column.name}` | {required} | {column.format} | {example} |")
    return "\n".join(lines)


def template_csv(market: str, rows: int = 3) -> str:
    """A valid CSV rows file for ``market``: its header and ``rows`` made-up payouts."""
    examples = _examples(market, rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, _order(_schema(market), examples[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(examples)
    return out.getvalue()


def check_columns(market: str, names: Collection[str]) -> None:
    """Raise InvalidFile when ``names`` (a file's columns) are another market's.

    A file for the wrong market would otherwise fail every row on every column it
    lacks; one line naming the market it fits says what happened.
    """
    known = _names(market)
    unknown = sorted(set(names) - known)
    by_case = {name.lower(): name for name in known}
    recased = {  # a column the file lacks, given in other letter cases
        name: by_case[name.lower()]
        for name in unknown
        if name.lower() in by_case and by_case[name.lower()] not in names
    }
    if recased:
        said = ", ".join(f"{given} -> {meant}" for given, meant in recased.items())
        raise InvalidFile(
            f"column names are case-sensitive: {said} (see `disburse fields --market {market}`)"
        )
    # A file's columns: the template's (sample_rows); the others (notifyUrl) are filled in.
    in_files = set(sample_rows(market, 1)[0])
    missing = sorted(
        name
        for name, field in _schema(market).load_fields.items()
        if field.required and name in in_files and name not in names
    )
    if names and missing and not unknown:
        raise InvalidFile(
            f"missing column(s) {', '.join(missing)}: every row needs them "
            f"(see `disburse fields --market {market}`)"
        )
    if not unknown:
        return
    fits = [
        code
        for code in MARKETS
        if code != market and set(names) <= set(MARKETS[code]().load_fields)
    ]
    if fits:
        raise InvalidFile(
            f"the columns look like market {' or '.join(fits)}'s, not {market}'s "
            f"({', '.join(unknown)}): use --market {fits[0]}, "
            f"or see `disburse fields --market {market}`"
        )


def notify_url_error(market: str, url: str) -> str | None:
    """Why ``url`` (the NOTIFY_URL setting) cannot be sent for ``market``; None if it can."""
    field = _schema(market).load_fields["notifyUrl"]
    try:
        field.deserialize(url)
    except ValidationError as exc:
        return " ".join(map(str, exc.messages))
    return None
