"""`disburse export`: one CSV row per payout, every cell safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest

from schemas import Payout
from worker import cli
from worker.celery import runtime
from worker.core.states import State
from worker.flows import report
from worker.flows.report import export_cell, export_csv
from worker.ledger import Ledger

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
    assert row["platformTradeNo"] == "'+1" and row["providerStatus"] == ""
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


def test_times_are_iso_utc_and_every_row_names_its_batch(ledger: Ledger) -> None:
    create(ledger, payout("inv-1"))
    (row,) = exported(ledger)
    assert row["batchId"] == "b1"
    order = ledger.get(row["tradeNo"])
    assert order is not None
    assert row["createdAt"] == report.iso_utc(order.created_ms)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["createdAt"])
    assert report.iso_utc(1_764_607_620_123) == "2025-12-01T16:47:00.123Z"
    assert "createdMs" not in row


def settle(ledger: Ledger, trade_no: str, target: State, **facts: str) -> None:
    assert ledger.claim(trade_no)[0].moved
    assert ledger.transition(trade_no, target, source="webhook", **facts).moved  # type: ignore[arg-type]


def test_every_failed_and_review_row_says_why_and_provider_status_has_one_meaning(
    ledger: Ledger,
) -> None:
    refused, failed, via_details, review, paid = create(
        ledger, *[payout(f"inv-{i}", amount=str(100000 + i)) for i in range(5)]
    )
    settle(ledger, refused, State.FAILED, provider_status="8000", provider_message="bad bank")
    settle(ledger, failed, State.FAILED, provider_status="00029", provider_message="closed")
    settle(ledger, via_details, State.FAILED, provider_status="failed")
    settle(ledger, review, State.REVIEW)
    settle(ledger, paid, State.SUCCEEDED, provider_status="success")
    rows = {r["tradeNo"]: r for r in exported(ledger)}
    assert rows[refused]["reason"] == "refused by the provider: code 8000: bad bank"
    assert rows[failed]["reason"] == "the provider reported the payout failed: closed"
    assert rows[via_details]["reason"] == "the provider reported the payout failed"
    assert rows[review]["reason"].startswith("needs a person")
    assert rows[paid]["reason"] == ""
    # The payout API's 00029, the details API's "failed": one word; a refusal is no status.
    assert [rows[t]["providerStatus"] for t in (refused, failed, via_details, paid)] == [
        "",
        "FAILED",
        "FAILED",
        "SUCCEEDED",
    ]


def test_the_batch_summary_shows_no_internal_fields(ledger: Ledger) -> None:
    create(ledger, payout("inv-1"))
    summary = ledger.batch("b1")
    assert summary is not None
    assert set(summary.to_dict()) == {
        "batch_id", "market", "total", "counts", "amounts", "discrepancies", "held_reason",
        "fees", "debited",
    }  # fmt: skip
    assert summary.to_dict()["counts"] == {"QUEUED": 1}


def test_amounts_are_exported_exactly_as_they_were_signed(ledger: Ledger) -> None:
    from schemas import validate_row
    from tests.unit.schemas.test_schemas import row

    written = [
        ("ID", {"amount": "100000"}),
        ("AR", {"amount": "150.00"}),  # two zero decimals, as the seed's example: sent "150"
        ("JP", {"amount": "5000"}),
        ("KH", {"currency": "KHR", "amount": "4000"}),
        ("KH", {"currency": "USD", "amount": "12.5"}),  # sent with its cents: "12.50"
        ("KH", {"currency": "USD", "amount": "0.10"}),
    ]
    signed: dict[str, str] = {}  # tradeNo -> the amount a worker signs and sends
    for index, (market, changes) in enumerate(written):
        payout = validate_row(market, row(market, **changes))
        ((trade_no, _),) = ledger.create_orders([payout], batch_id=f"b{index}", market=market)
        claim, fields = ledger.claim(trade_no)  # the fields the worker signs, as sent
        assert claim.moved and fields is not None
        signed[trade_no] = fields["amount"]
        settle_as = State.SUCCEEDED if index % 2 else State.FAILED  # the payload goes or stays
        assert ledger.transition(trade_no, settle_as, source="submit").moved
    out = io.StringIO()
    export_csv(ledger, [f"b{index}" for index in range(len(written))], out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert {r["tradeNo"]: r["amount"] for r in rows} == signed
    assert list(signed.values()) == ["100000", "150", "5000", "4000", "12.50", "0.10"]
