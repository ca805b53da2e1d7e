"""Validate -> persist -> publish, on the test ledger with a recording publisher."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from tests import ledger_reads
from worker import cli
from worker.core.exceptions import ConfigError, InvalidFile, InvalidPayout, UnknownMarket
from worker.core.rows import parse_rows, read_rows
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.credentials import sandbox_settings
from worker.flows.producer import Producer
from worker.ledger import Ledger
from worker.provider.vexora import VexoraClient


def numbered(rows: list[dict[str, str]]) -> list[tuple[int, dict[str, str]]]:
    return list(enumerate(rows, start=1))


def test_valid_batch_is_persisted_then_published(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    result = make_producer.enqueue_batch("ID", numbered(sample_rows("ID", 30)))
    assert result.batch_id and result.accepted == 30 and result.rejected == []
    assert published == [result.trade_nos]
    summary = ledger.batch(result.batch_id)
    assert summary is not None and summary.counts == {State.QUEUED: 30}
    fields = ledger_reads.payload(ledger, result.trade_nos[0])
    assert fields["notifyUrl"] == "https://merchant.example/notify"
    assert "reference" not in fields


def test_one_invalid_row_rejects_the_whole_batch(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    rows = sample_rows("AR", 10)
    rows[2]["mobile"] = "123"
    rows[6]["amount"] = "50"
    result = make_producer.enqueue_batch("AR", numbered(rows))
    assert result.batch_id is None and result.accepted == 0
    assert [(e.row, list(e.errors)) for e in result.rejected] == [(3, ["mobile"]), (7, ["amount"])]
    assert published == [] and ledger.state_counts() == {}
    assert result.to_dict()["rejected"][0]["row"] == 3


def test_a_bad_row_after_many_good_ones_leaves_nothing(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    """Rows go to the ledger while later ones are still being validated: a late bad row
    rolls back the ones already handed over."""
    rows = sample_rows("ID", 3000)
    rows[2997]["amount"] = "1"
    rows[2999]["mobile"] = "123"
    result = make_producer.enqueue_batch("ID", numbered(rows))
    assert result.batch_id is None and result.accepted == 0
    assert [(e.row, list(e.errors)) for e in result.rejected] == [
        (2998, ["amount"]),
        (3000, ["mobile"]),
    ]
    assert published == []
    with ledger.pool.connection() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM batches), "
            "(SELECT count(*) FROM order_events)"
        ).fetchone()
    assert counts == (0, 0, 0)
    # The same rows once fixed are enqueued whole.
    rows[2997]["amount"] = "100000"
    rows[2999]["mobile"] = "081234567890"
    again = make_producer.enqueue_batch("ID", numbered(rows))
    assert again.accepted == 3000 and sum(len(p) for p in published) == 3000


def test_skip_invalid_enqueues_the_valid_rows(
    make_producer: Producer, published: list[list[str]]
) -> None:
    rows = sample_rows("KH", 5)
    rows[0]["currency"] = "EUR"
    result = make_producer.enqueue_batch("KH", numbered(rows), skip_invalid=True)
    assert result.accepted == 4 and [e.row for e in result.rejected] == [1]
    assert sum(len(p) for p in published) == 4


def test_reference_enqueued_twice_returns_the_existing_order(
    make_producer: Producer, published: list[list[str]]
) -> None:
    rows = sample_rows("JP", 3)
    first = make_producer.enqueue_batch("JP", numbered(rows))
    again = make_producer.enqueue_batch("JP", numbered(rows))
    assert again.accepted == 0 and again.existing == 3
    assert again.trade_nos == first.trade_nos
    assert published == [first.trade_nos, []]


def test_same_reference_twice_in_one_batch_rejects_it_naming_both_rows(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    rows = sample_rows("ID", 5)
    rows[4] |= {"reference": rows[2]["reference"], "amount": "990000", "bankAccountNo": "77"}
    result = make_producer.enqueue_batch("ID", numbered(rows))
    assert result.batch_id is None and result.accepted == 0
    assert [(e.row, e.errors) for e in result.rejected] == [
        (5, {"reference": ["Same reference as row 3."]})
    ]
    assert published == [] and ledger.state_counts() == {}


def test_skip_invalid_keeps_the_first_of_a_repeated_reference(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    rows = sample_rows("ID", 4)
    rows[1]["reference"] = rows[3]["reference"] = rows[0]["reference"]
    rows[3]["amount"] = "990000"
    result = make_producer.enqueue_batch("ID", numbered(rows), skip_invalid=True)
    assert result.accepted == 2 and result.existing == 0
    assert [(e.row, e.errors["reference"]) for e in result.rejected] == [
        (2, ["Same reference as row 1."]),
        (4, ["Same reference as row 1."]),
    ]
    kept = ledger_reads.trade_no_for(ledger, rows[0]["reference"])
    assert kept == result.trade_nos[0] and published == [result.trade_nos]
    order = ledger.get(kept)
    assert order is not None and order.amount == Decimal(rows[0]["amount"])


def test_a_repeated_reference_is_reported_even_when_its_first_row_is_invalid(
    make_producer: Producer, published: list[list[str]]
) -> None:
    rows = sample_rows("ID", 3)
    rows[0]["amount"] = "12.5"
    rows[2]["reference"] = rows[0]["reference"]
    result = make_producer.enqueue_batch("ID", numbered(rows), skip_invalid=True)
    assert [(e.row, sorted(e.errors)) for e in result.rejected] == [
        (1, ["amount"]),
        (3, ["reference"]),
    ]
    assert result.accepted == 1 and published == [result.trade_nos]


def test_public_enqueue_batch_numbers_the_repeated_rows_from_1(
    monkeypatch: pytest.MonkeyPatch, make_producer: Producer, published: list[list[str]]
) -> None:
    from worker import enqueue_batch
    from worker.celery import runtime

    monkeypatch.setattr(runtime, "producer", lambda: make_producer)
    rows = sample_rows("AR", 2)
    rows[1]["reference"] = rows[0]["reference"]
    result = enqueue_batch("AR", rows)
    assert result.to_dict() == {
        "batch_id": None,
        "accepted": 0,
        "rejected": [{"row": 2, "errors": {"reference": ["Same reference as row 1."]}}],
    }
    assert published == []


def test_hold_persists_without_publishing(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    result = make_producer.enqueue_batch("ID", numbered(sample_rows("ID", 4)), hold=True)
    assert published == []
    assert result.batch_id is not None
    summary = ledger.batch(result.batch_id)
    assert summary is not None and summary.counts == {State.HELD: 4}


def test_dry_run_validates_and_signs_without_enqueuing(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    result = make_producer.enqueue_batch("ID", numbered(sample_rows("ID", 4)), dry_run=True)
    assert result.dry_run and result.accepted == 4 and result.batch_id is None
    assert published == [] and ledger.state_counts() == {}


def test_dry_run_signs_each_payout_with_its_market_account(ledger: Ledger) -> None:
    signed: list[tuple[str, Mapping[str, str], str]] = []

    def signer(market: str) -> Callable[[Mapping[str, str], str], None]:
        return lambda fields, trade_no: signed.append((market, fields, trade_no))

    producer = Producer(
        ledger,
        sandbox_settings(env={"NOTIFY_URL": "https://merchant.example/notify"}),
        publish=list,
        sign=signer,
    )
    rows = sample_rows("AR", 3)
    producer.enqueue_batch(" ar ", numbered(rows), dry_run=True)
    assert [market for market, _, _ in signed] == ["AR"] * 3
    assert [fields["amount"] for _, fields, _ in signed] == [row["amount"] for row in rows]
    assert len({trade_no for _, _, trade_no in signed}) == 3  # a fresh tradeNo each


def test_single_enqueue_names_each_bad_field(make_producer: Producer) -> None:
    row = sample_rows("ID", 1)[0] | {"bankCode": "2", "email": "x"}
    with pytest.raises(InvalidPayout) as caught:
        make_producer.enqueue("ID", row)
    assert set(caught.value.errors) == {"bankCode", "email"}


@pytest.mark.parametrize("code", ["XX", "", "IDN", "indonesia", "I D"])
def test_unknown_market_is_refused_with_the_valid_codes(
    make_producer: Producer, ledger: Ledger, published: list[list[str]], code: str
) -> None:
    with pytest.raises(UnknownMarket) as caught:
        make_producer.enqueue(code, sample_rows("ID", 1)[0])
    assert isinstance(caught.value, ValueError) and caught.value.market == code
    for valid in ("AR", "ID", "JP", "KH"):
        assert valid in str(caught.value)
    with pytest.raises(UnknownMarket):
        make_producer.enqueue_batch(code, [])  # even without rows
    assert published == [] and ledger.state_counts() == {}


def test_a_batch_is_stored_under_the_markets_own_code(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    result = make_producer.enqueue_batch(" id ", numbered(sample_rows("ID", 2)))
    summary = ledger.batch(result.batch_id or "")
    assert summary is not None and summary.market == "ID"
    assert {o.market for o in ledger.get_many(result.trade_nos) if o is not None} == {"ID"}


def test_csv_rows_are_numbered_by_line_and_broken_lines_reported() -> None:
    raw = b"amount,bankCode\n100000,0002\n1,2,3\n\n200000,0003\n"
    rows, errors = parse_rows(raw, "csv")
    assert [n for n, _ in rows] == [2, 5]
    assert [(e.row, e.errors) for e in errors] == [
        (3, {"_row": ["has 3 cells, the header has 2 columns"]})
    ]


def test_jsonl_keeps_amounts_exact_and_reports_bad_lines() -> None:
    raw = b'{"amount": 100000.10}\n[1]\n{oops\n'
    rows, errors = parse_rows(raw, "jsonl")
    assert rows == [(1, {"amount": "100000.10"})]
    assert [e.row for e in errors] == [2, 3]


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\xff\xfe\x00", "not UTF-8"), (b"", "no rows"), (b"a,a\n1,2\n", "repeated column")],
)
def test_unreadable_files_are_one_clear_error(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidFile, match=message):
        parse_rows(raw, "csv")


def test_cli_enqueue_json_reports_rows_and_exits_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make_producer: Producer,
    published: list[list[str]],
) -> None:
    from worker.celery import runtime

    monkeypatch.setattr(runtime, "producer", lambda: make_producer)
    path = tmp_path / "batch.csv"
    path.write_text(
        "amount,customerName,mobile,email,bankAccountNo,bankCode\n5,A,0812345678,a@b.co,1,0002\n"
    )
    assert cli.run(["enqueue", str(path), "--market", "ID", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["batch_id"] is None and out["accepted"] == 0
    assert out["rejected"][0]["row"] == 2 and "amount" in out["rejected"][0]["errors"]
    assert published == []
    rows, _ = read_rows(path)
    assert len(rows) == 1


def test_cli_enqueue_prints_both_rows_of_a_repeated_reference(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make_producer: Producer,
    ledger: Ledger,
    published: list[list[str]],
) -> None:
    from worker.celery import runtime

    monkeypatch.setattr(runtime, "producer", lambda: make_producer)
    path = tmp_path / "batch.csv"
    path.write_text(
        "reference,amount,customerName,mobile,email,bankAccountNo,bankCode\n"
        "inv-1,100000,A,0812345678,a@b.co,1111,0002\n"
        "inv-1,250000,B,0812345679,b@b.co,2222,0002\n"
    )
    assert cli.run(["enqueue", str(path), "--market", "ID"]) == 1
    captured = capsys.readouterr()
    assert "row 3: reference: Same reference as row 2." in captured.err
    assert "1 already enqueued" not in captured.out + captured.err
    assert published == [] and ledger.state_counts() == {}


def test_cli_reports_a_missing_file_without_a_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.run(["enqueue", "/nonexistent/x.csv", "--market", "ID"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_cli_unknown_market_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.csv"
    path.write_text("amount\n1\n")
    assert cli.run(["enqueue", str(path), "--market", "XX"]) == 1
    assert "XX" in capsys.readouterr().err


def test_a_notify_url_the_market_refuses_is_one_configuration_error(
    ledger: Ledger, published: list[list[str]]
) -> None:
    settings = sandbox_settings(env={"NOTIFY_URL": "http://merchant.example/notify"})
    producer = Producer(
        ledger,
        settings,
        publish=lambda trade_nos: published.append(list(trade_nos)),
        sign=lambda market: VexoraClient.from_settings(settings, market).signed_body,
    )
    with pytest.raises(ConfigError, match=r"^NOTIFY_URL.*https"):
        producer.enqueue_batch("JP", numbered(sample_rows("JP", 20)))
    with pytest.raises(ConfigError, match=r"^NOTIFY_URL"):
        producer.enqueue("KH", sample_rows("KH", 1)[0])
    assert published == [] and ledger.state_counts() == {}
    # Rows that carry their own notifyUrl do not need the setting; ID accepts http.
    own = [{**row, "notifyUrl": "https://merchant.example/jp"} for row in sample_rows("JP", 2)]
    assert producer.enqueue_batch("JP", numbered(own)).accepted == 2
    assert producer.enqueue_batch("ID", numbered(sample_rows("ID", 2))).accepted == 2


def test_a_row_sending_its_outcome_to_another_host_is_rejected_with_its_row(
    make_producer: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    rows = sample_rows("ID", 3)
    rows[1] = {**rows[1], "notifyUrl": "https://attacker.example/notify"}
    rows[2] = {**rows[2], "notifyUrl": "https://merchant.example/notify/other"}  # NOTIFY_URL's
    result = make_producer.enqueue_batch("ID", numbered(rows))
    assert result.batch_id is None and published == [] and ledger.state_counts() == {}
    assert [(error.row, list(error.errors)) for error in result.rejected] == [(2, ["notifyUrl"])]
    assert "https://merchant.example" in result.rejected[0].errors["notifyUrl"][0]
