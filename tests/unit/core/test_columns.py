"""Each market's columns told to users (reference, template, wrong-market and delimiter
errors), read from the schemas that validate the rows."""

from __future__ import annotations

import pytest

from schemas import MARKETS, validate_rows
from worker.core.columns import (
    check_columns,
    columns,
    notify_url_error,
    reference_table,
    template_csv,
)
from worker.core.exceptions import InvalidFile
from worker.core.rows import delimiter, parse_rows
from worker.core.samples import sample_rows

NOTIFY = "https://merchant.example/notify"


@pytest.mark.parametrize("market", list(MARKETS))
def test_the_template_is_a_valid_rows_file_of_its_market(market: str) -> None:
    rows, errors = parse_rows(template_csv(market).encode(), "csv")
    assert errors == [] and len(rows) == 3
    valid, invalid = validate_rows(market, rows, notify_url=NOTIFY)
    assert invalid == [] and len(valid) == 3


@pytest.mark.parametrize("market", list(MARKETS))
def test_the_reference_lists_every_column_the_schema_reads(market: str) -> None:
    schema = MARKETS[market]()
    listed = columns(market)
    assert sorted(c.name for c in listed) == sorted(schema.load_fields)
    required = {c.name for c in listed if c.required}
    # notifyUrl is required by the provider, but the NOTIFY_URL setting fills it in.
    assert required == {n for n, f in schema.load_fields.items() if f.required} - {"notifyUrl"}
    assert all(c.format for c in listed)
    table = reference_table(market)
    assert all(f"| `{c.name}` |" in table for c in listed)


def test_each_format_is_read_from_the_field_rules() -> None:
    formats = {c.name: c.format for c in columns("JP")}
    assert formats["bankCode"] == "exactly 4 digits"
    assert "https://" in formats["notifyUrl"] and "http://" not in formats["notifyUrl"]
    assert "11 digits starting with 0" in formats["mobile"]
    assert "at least 100" in formats["amount"]
    kh = {c.name: c.format for c in columns("KH")}
    assert "USD: up to 2 decimals" in kh["amount"] and "EWALLET" in kh["accountId"]


@pytest.mark.parametrize(("market", "other"), [("ID", "JP"), ("JP", "KH"), ("KH", "AR")])
def test_a_file_of_another_market_is_one_line_naming_it(market: str, other: str) -> None:
    names = sample_rows(other, 1)[0]
    with pytest.raises(InvalidFile) as caught:
        check_columns(market, names)
    message = str(caught.value)
    assert f"look like market {other}'s, not {market}'s" in message
    assert f"--market {other}" in message and "\n" not in message


def test_a_misspelt_column_is_left_to_the_row_errors() -> None:
    names = {**sample_rows("ID", 1)[0], "bankcode": "0002"}
    check_columns("ID", names)  # no market fits: each row names the unknown field


@pytest.mark.parametrize("sep", [";", "\t", ","])
def test_semicolon_and_tab_separated_files_are_read(sep: str) -> None:
    text = template_csv("KH").replace(",", sep)
    assert delimiter(text) == sep
    rows, errors = parse_rows(text.encode(), "csv")
    assert errors == [] and len(rows) == 3
    assert validate_rows("KH", rows, notify_url=NOTIFY)[1] == []


def test_a_comma_inside_quotes_does_not_make_a_semicolon_file_comma_separated() -> None:
    assert delimiter('"a,b";c;d\n1;2;3\n') == ";"
    assert delimiter("a;b\n") == ";" and delimiter("amount\n5\n") == ","


def test_notify_url_is_checked_against_the_market_rule() -> None:
    assert notify_url_error("ID", "http://merchant.example/notify") is None
    assert "https" in (notify_url_error("JP", "http://merchant.example/notify") or "")
    assert notify_url_error("KH", NOTIFY) is None


def test_the_reference_examples_are_the_templates_first_row() -> None:
    header, first, *_ = template_csv("JP").splitlines()
    assert dict(zip(header.split(","), first.split(","), strict=True)) == {
        c.name: c.example for c in columns("JP")
    }


def test_missing_and_miscased_columns_are_said_once() -> None:
    row = sample_rows("ID", 1)[0]
    with pytest.raises(InvalidFile, match="missing column\\(s\\) amount, bankCode"):
        check_columns("ID", {k for k in row if k not in ("amount", "bankCode")})
    with pytest.raises(InvalidFile, match="case-sensitive: AMOUNT -> amount"):
        check_columns("ID", {"AMOUNT", *(k for k in row if k != "amount")})
    check_columns("ID", {k for k in row if k != "reference"})  # optional: left out freely
