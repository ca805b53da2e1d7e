"""`disburse export`: one CSV row per payout, every cell safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest

from schemas import Payout
from worker import cli, report, runtime
from worker.ledger import Ledger
from worker.report import export_cell, export_csv
from worker.states import State

# Values a spreadsheet would evaluate, as references, provider ids or messages can carry.
FORMULAS = ["-1-1", '=HYPERLINK("http://x","y")', "+1", "@SUM(A1)", "\tTAB", "\rCR"]


def payout(reference: str | None, amount: str = "100000") -> Payout:
    fields = {"amount": amount, "bankAccountNo": "5464438554636", "bankCode": "0002"}
    return Payout("ID", "IDR", Decimal(amount), reference, fields)


def create(ledger: Ledger, *payouts: Payout) -> list[str]:
    """The payouts' orders, in the batch ``b1``."""
    return [t for t, _ in ledger.create_orders(list(payouts), batch_id="b1", market="ID")]


def exported(ledger: Ledger) -> list[dict[str, str]]:
    out = io.StringIO()
    export_csv(ledger, ["b1"], out)
    return list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("-1-1", "'-1-1"),
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1", "'+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("inv-1", "inv-1"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (Decimal("100000"), "100000"),
        (Decimal("12.50"), "12.50"),
        (3, "3"),
        (State.SUCCEEDED, "SUCCEEDED"),
    ],
)
def test_a_cell_a_spreadsheet_would_evaluate_is_made_text(value: object, cell: str) -> None:
    assert export_cell(value) == cell


def test_references_that_look_like_formulas_are_exported_as_text(ledger: Ledger) -> None:
    create(ledger, *[payout(f, amount=str(100000 + i)) for i, f in enumerate(FORMULAS)])
    rows = exported(ledger)
    assert [r["reference"] for r in rows] == ["'" + f for f in FORMULAS]
    assert [r["amount"] for r in rows] == [str(100000 + i) for i in range(len(FORMULAS))]


def test_provider_facts_that_look_like_formulas_are_exported_as_text(ledger: Ledger) -> None:
    (trade_no,) = create(ledger, payout("inv-7"))
    assert ledger.claim(trade_no)[0].moved
    assert ledger.transition(
        trade_no,
        State.FAILED,
        source="submit",
        platform_trade_no="+1",
        provider_status="-2",
        provider_message='=HYPERLINK("http://x","y")',
        reason="@SUM(A1)",
    ).moved
    (row,) = exported(ledger)
    assert row["reference"] == "inv-7" and row["tradeNo"] == trade_no
    assert row["state"] == "FAILED" and row["amount"] == "100000"
    assert row["platformTradeNo"] == "'+1" and row["providerStatus"] == "'-2"
    assert row["providerMessage"] == '\'=HYPERLINK("http://x","y")'
    assert row["reason"] == "'@SUM(A1)"


def test_cli_export_keeps_its_columns_and_writes_formulas_as_text(
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(runtime, "ledger", lambda: ledger)
    trade_no, _ = create(ledger, payout("-1-1", amount="250000"), payout(None))
    path = tmp_path / "out.csv"
    assert cli.run(["export", "b1", "--output", str(path)]) == 0
    assert "wrote 2 payouts" in capsys.readouterr().out
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = ["reference", "tradeNo", "state", "amount", "platformTradeNo"]
    assert [{c: r[c] for c in columns} for r in rows] == [
        {
            "reference": "'-1-1",
            "tradeNo": trade_no,
            "state": "QUEUED",
            "amount": "250000",
            "platformTradeNo": "",
        },
        {
            "reference": "",
            "tradeNo": rows[1]["tradeNo"],
            "state": "QUEUED",
            "amount": "100000",
            "platformTradeNo": "",
        },
    ]
    assert set(columns) <= set(report.EXPORT_COLUMNS)
