"""bench.slow_provider's verdicts: a row of ours passes only at its share of the limit,
with no second above it, and at 0.8 of the raw loop; the table shows every row."""

from __future__ import annotations

import argparse

import pytest

from bench import slow_provider
from bench.__main__ import _counts
from bench.common import Result
from bench.slow_provider import Row, render, targets


def _row(label: str, role: str, limit: int, paid: int, busiest: int) -> Row:
    return Row(label, role, limit, in_flight=8, paid=paid, seconds=10.0, busiest=busiest,
               rss=100 * 2**20, cpu=5.0)  # fmt: skip


def test_ours_passes_at_its_share_of_the_limit_and_of_the_raw_loop() -> None:
    rows = [
        _row("ours 100", "ours", 100, paid=960, busiest=100),
        _row("ours 400, over the limit once", "ours", 400, paid=3700, busiest=401),
        _row("ours 400, too slow", "ours", 400, paid=3500, busiest=380),
        _row("baseline", "baseline", 100, paid=140, busiest=14),
        _row("raw 100", "raw", 100, paid=1000, busiest=100),
        _row("raw 400", "raw", 400, paid=4000, busiest=400),
    ]
    verdicts = [met for _, met in targets(rows).values()]
    assert verdicts == [True, False, False, None, None, None]


def test_ours_under_0_8_of_the_raw_loop_misses_even_at_the_limit_share() -> None:
    rows = [_row("ours", "ours", 100, paid=960, busiest=99),
            _row("raw", "raw", 100, paid=1300, busiest=100)]  # fmt: skip
    assert targets(rows)[0] == (">= 0.95 of limit, >= 0.8 of raw (0.74)", False)


def test_the_table_has_a_line_per_row_with_its_numbers() -> None:
    row = _row("ours", "ours", 100, paid=960, busiest=97)
    row.capped = True
    row.extra = {"steady_per_s": 99.04}
    raw = _row("raw", "raw", 100, paid=1000, busiest=100)
    results = [Result(case=r.label, ours="-", raw={"row": r.__dict__}) for r in (row, raw)]
    lines = render(results).splitlines()
    assert lines[0].startswith("| configuration ")
    cells = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    assert cells[:-2] == ["ours", "100/s", "8", "96.0", "0.96", "97", "100", "5.2",
                          "10.0 (capped, 960 paid)", "99.0"]  # fmt: skip
    assert cells[-2:] == [">= 0.95 of limit, >= 0.8 of raw (0.96)", "pass"]


def test_a_row_is_cut_after_enough_time_for_0_8_of_the_limit() -> None:
    assert slow_provider.cap_for(5_000, 100) == pytest.approx(72.5)
    assert 5_000 / (slow_provider.cap_for(5_000, 100) - 10) == pytest.approx(80)


def test_the_counts_options_take_positive_numbers() -> None:
    assert _counts("1,2, 4") == (1, 2, 4)
    for bad in ("0", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _counts(bad)
