"""Fuzzing the input edge: CSV / JSON Lines bytes -> rows -> schemas -> one whole batch or none.

Any bytes in: ``parse_rows`` raises only ``InvalidFile`` (the file as a whole) or returns
clean per-row ``RowError``s; ``validate_rows`` never raises for any parsed row in any
market and accounts for every row; and a batch with any bad row creates no order and
publishes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from schemas import MARKETS, Payout, RowError, validate_rows
from tests.support.servers import empty_ledger
from worker.core.exceptions import InvalidFile
from worker.core.rows import parse_rows
from worker.core.samples import sample_rows
from worker.dev.credentials import sandbox_settings
from worker.flows.producer import Producer
from worker.ledger import Ledger
from worker.provider.vexora import VexoraClient

FORMATS = ("csv", "jsonl")
MARKET_CODES = sorted(MARKETS)
SETTINGS = sandbox_settings(env={"NOTIFY_URL": "https://merchant.example/notify"})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values a JSON Lines row may carry in place of a good one.
json_values = st.one_of(
    st.text(max_size=24),
    st.integers(min_value=-(10**30), max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.just(""),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Cells a CSV row may carry: text of every kind, including quotes, separators and NULs.
csv_cells = st.one_of(
    st.text(max_size=24),
    st.text(alphabet='",\r\n\x00 ;\t\ufeff', max_size=6),
    # Arabic-Indic and full-width digits are refused, never read as numbers.
    st.sampled_from(
        ["", " ", "0", "-1", "1e5", "\u0661\u0662", "\uff11\uff10\uff10", "NaN", "100.005"]
    ),
)
KNOWN_FIELDS = [
    *("amount", "mobile", "email", "currency", "reference", "notifyUrl", "remark"),
    *("bankCode", "accountNo", "firstname", "bankNumber", "channelCode", "accountId"),
]
field_names = st.one_of(st.sampled_from(KNOWN_FIELDS), st.text(max_size=10))


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else str(row.get(k)) for k in header])
    return out.getvalue().encode("utf-8")


def to_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("utf-8")


@st.composite
def near_valid_files(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """Good sample rows with some fields changed, serialized, then maybe byte-damaged."""
    market = draw(st.sampled_from(MARKET_CODES))
    fmt = draw(st.sampled_from(FORMATS))
    rows = sample_rows(market, draw(st.integers(1, 6)), seed=draw(st.integers(0, 1000)))
    for _ in range(draw(st.integers(0, 4))):
        row = rows[draw(st.integers(0, len(rows) - 1))]
        name = draw(field_names)
        if draw(st.booleans()) and name in row:
            del row[name]
        else:
            row[name] = draw(json_values if fmt == "jsonl" else csv_cells)
    raw = to_jsonl(rows) if fmt == "jsonl" else to_csv(rows)
    for _ in range(draw(st.integers(0, 2))):  # byte-level damage: insert or cut
        at = draw(st.integers(0, len(raw)))
        if draw(st.booleans()):
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
        else:
            raw = raw[:at] + raw[at + draw(st.integers(1, 8)) :]
    return raw, fmt, market


any_bytes = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=400).map(lambda t: t.encode("utf-8")),
    st.lists(st.text(alphabet='a,"\n\r{}[]:0 \x00', max_size=30), max_size=8).map(
        lambda lines: "\n".join(lines).encode("utf-8")
    ),
)
files = st.one_of(
    near_valid_files(),
    st.tuples(any_bytes, st.sampled_from(FORMATS), st.sampled_from(MARKET_CODES)),
)


def parse(raw: bytes, fmt: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]] | None:
    """``parse_rows``, with the one exception it may raise turned into None."""
    try:
        return parse_rows(raw, fmt)
    except InvalidFile as exc:
        assert str(exc), "an InvalidFile must say why"
        return None


def assert_clean_errors(errors: list[RowError]) -> None:
    for error in errors:
        assert isinstance(error, RowError) and isinstance(error.row, int) and error.row >= 1
        assert error.errors and all(
            isinstance(k, str) and v and all(isinstance(m, str) and m for m in v)
            for k, v in error.errors.items()
        ), error


@FUZZ
@given(files)
def test_any_bytes_parse_to_rows_and_clean_row_errors_or_an_input_error(
    case: tuple[bytes, str, str],
) -> None:
    raw, fmt, _ = case
    parsed = parse(raw, fmt)
    if parsed is None:
        return
    rows, errors = parsed
    assert rows or errors
    assert_clean_errors(errors)
    numbers = [n for n, _ in rows] + [e.row for e in errors]
    assert len(numbers) == len(set(numbers)), "two results for one line"
    for number, row in rows:
        assert isinstance(number, int) and number >= (2 if fmt == "csv" else 1)
        assert isinstance(row, dict)
        if fmt == "csv":
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in row.items())


@FUZZ
@given(files)
def test_parsed_rows_validate_in_every_market_without_raising(
    case: tuple[bytes, str, str],
) -> None:
    raw, fmt, _ = case
    parsed = parse(raw, fmt)
    if parsed is None:
        return
    rows, _ = parsed
    for market in MARKET_CODES:
        valid, errors = validate_rows(market, rows, notify_url=SETTINGS.notify_url)
        assert_clean_errors(errors)
        # Every row is accounted for exactly once: valid or with its errors.
        assert sorted([n for n, _ in valid] + [e.row for e in errors]) == sorted(n for n, _ in rows)
        for _, payout in valid:
            assert isinstance(payout, Payout) and payout.market == market
            assert all(isinstance(v, str) and v for v in payout.fields.values())
            assert payout.amount > 0 and payout.fields["amount"] == format(payout.amount, "f")


def enqueue(
    ledger: Ledger,
    market: str,
    rows: list[tuple[int, Mapping[str, Any]]],
    parse_errors: list[RowError],
) -> tuple[Any, list[list[str]]]:
    published: list[list[str]] = []
    producer = Producer(
        ledger,
        SETTINGS,
        publish=lambda trade_nos: published.append(list(trade_nos)),
        sign=lambda market: VexoraClient.from_settings(SETTINGS, market).signed_body,
    )
    result = producer.enqueue_batch(market, rows, parse_errors=parse_errors)
    return result, published


# The session's ledger, emptied by each example: the ``ledger`` fixture would empty it
# once per test, not per example.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files)
def test_a_batch_with_any_bad_row_creates_no_order_at_all(
    ledger_pool: ConnectionPool, case: tuple[bytes, str, str]
) -> None:
    raw, fmt, market = case
    parsed = parse(raw, fmt)
    if parsed is None:
        return
    rows, parse_errors = parsed
    _, invalid = validate_rows(market, rows, notify_url=SETTINGS.notify_url)
    empty_ledger(ledger_pool)
    ledger = Ledger(ledger_pool)
    result, published = enqueue(ledger, market, list(rows), parse_errors)
    if invalid or parse_errors or not rows:
        assert result.batch_id is None and result.accepted == 0 and result.trade_nos == []
        assert sorted(e.row for e in result.rejected) == sorted(
            [e.row for e in invalid] + [e.row for e in parse_errors]
        )
        left = ledger.state_counts()
        assert left == {} and published == [], "a rejected batch left traces"
    else:
        # (Two rows sharing a reference are invalid, so every row is a new order.)
        assert result.batch_id is not None and result.rejected == []
        assert len(set(result.trade_nos)) == len(rows) and len(published) == 1
        assert published[0] == result.trade_nos and result.accepted == len(rows)
        summary = ledger.batch(result.batch_id)
        assert summary is not None and summary.total == len(rows)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(MARKET_CODES),
    st.sampled_from(FORMATS),
    st.integers(1, 8),
    st.integers(0, 10_000),
    st.data(),
)
def test_one_bad_row_among_good_ones_rejects_the_batch_and_names_that_row(
    ledger_pool: ConnectionPool, market: str, fmt: str, count: int, seed: int, data: st.DataObject
) -> None:
    rows = sample_rows(market, count, seed=seed)
    bad = data.draw(st.integers(0, count - 1))
    rows[bad]["amount"] = data.draw(st.sampled_from(["0", "-5", "abc", "", "1e9", "9" * 20]))
    raw = to_jsonl(rows) if fmt == "jsonl" else to_csv(rows)
    parsed = parse_rows(raw, fmt)
    assert parsed[1] == []
    empty_ledger(ledger_pool)
    ledger = Ledger(ledger_pool)
    result, published = enqueue(ledger, market, parsed[0], [])
    line = bad + (2 if fmt == "csv" else 1)
    assert result.batch_id is None and [e.row for e in result.rejected] == [line]
    assert "amount" in result.rejected[0].errors
    assert ledger.state_counts() == {} and published == []


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MARKET_CODES), st.sampled_from(FORMATS), st.integers(1, 10), st.integers())
def test_good_rows_survive_the_round_trip_through_a_file(
    market: str, fmt: str, count: int, seed: int
) -> None:
    rows = sample_rows(market, count, seed=seed)
    raw = to_jsonl(rows) if fmt == "jsonl" else to_csv(rows)
    if random.Random(seed).random() < 0.5:
        # A BOM, and CRLF line ends (csv.writer already ends CSV lines with CRLF).
        raw = b"\xef\xbb\xbf" + (raw.replace(b"\n", b"\r\n") if fmt == "jsonl" else raw)
    parsed, errors = parse_rows(raw, fmt)
    assert errors == [] and [r for _, r in parsed] == rows
    valid, invalid = validate_rows(market, parsed, notify_url=SETTINGS.notify_url)
    assert invalid == [] and len(valid) == count
