"""Reading payout rows from CSV or JSON Lines files, with clean per-row errors.

Any bytes in, never a crash out: a file that cannot be used as a whole (unreadable,
not UTF-8, no rows, a bad CSV header) raises ``InvalidFile`` with the reason; a row
that cannot be parsed becomes that row's error.
Rows are numbered by their line in the file (the CSV header is line 1). A CSV file
may be separated by commas, semicolons or tabs: its header line tells which.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas import RowError
from worker.core.exceptions import InvalidFile

ParsedRow = tuple[int, dict[str, Any]]


def detect_format(path: Path, text: str) -> str:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if path.suffix.lower() == ".csv":
        return "csv"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def read_rows(path: Path, raw: bytes | None = None) -> tuple[list[ParsedRow], list[RowError]]:
    """All rows of the file (of ``raw``, its bytes, when the caller read them), and the rows
    that could not even be parsed."""
    if raw is None:
        raw = read_bytes(path)
    return parse_rows(raw, detect_format(path, raw[:64].decode("utf-8", "replace")))


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidFile(f"cannot read {path}: {exc.strerror or exc}") from None


# The first bytes of a ZIP archive (.xlsx, .ods) and of an OLE2 file (.xls).
_WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")


def parse_rows(raw: bytes, fmt: str) -> tuple[list[ParsedRow], list[RowError]]:
    if raw.startswith(_WORKBOOKS):
        raise InvalidFile(
            "this is a spreadsheet workbook (.xlsx, .xls or .ods), not rows: "
            "save it as CSV (UTF-8) and enqueue that"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidFile(f"line {line}: the file is not UTF-8 text") from None
    rows = _jsonl(text) if fmt == "jsonl" else _csv(text)
    parsed: list[ParsedRow] = []
    errors: list[RowError] = []
    for number, row in rows:
        if isinstance(row, RowError):
            errors.append(row)
        else:
            parsed.append((number, row))
    if not parsed and not errors:
        raise InvalidFile("the file has no rows")
    return parsed, errors


def _jsonl(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_float=str, parse_int=str)
        except (json.JSONDecodeError, RecursionError):
            yield number, RowError(number, {"_row": ["not a valid JSON object"]})
            continue
        if not isinstance(row, dict):
            yield number, RowError(number, {"_row": ["each line must be a JSON object"]})
            continue
        yield number, row


# What spreadsheets write: a comma, or where the comma is the decimal mark (much of
# Europe and Latin America) a semicolon; a tab for "tab-separated" exports.
DELIMITERS = (",", ";", "\t")


def delimiter(text: str) -> str:
    """The delimiter of a CSV text: the one that splits its header into the most columns
    (a comma on a tie, and for a one-column file)."""
    first = next(iter(io.StringIO(text, newline="")), "")

    def width(candidate: str) -> int:
        try:
            return len(next(csv.reader([first], delimiter=candidate), []))
        except csv.Error:
            return 0

    return max(DELIMITERS, key=width)


def _csv(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter(text))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InvalidFile(f"line 1: unreadable CSV header: {exc}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise InvalidFile("line 1: the CSV header is empty")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise InvalidFile(f"line 1: repeated column(s): {', '.join(duplicates)}")
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, RowError(reader.line_num, {"_row": [f"unreadable CSV: {exc}"]})
            continue
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            message = f"has {len(cells)} cells, the header has {len(header)} columns"
            yield number, RowError(number, {"_row": [message]})
            continue
        yield number, dict(zip(header, cells, strict=True))
