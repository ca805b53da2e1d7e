"""The policy through the commands, on the session's PostgreSQL and Redis: enqueue
--operator --not-before, approve --operator by two people, status --json, and the
audit trail that ``disburse audit`` prints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from worker import cli
from worker.celery import runtime
from worker.core.samples import sample_rows

POLICY = """
[markets.ID]
max_payout = "50000000"
approvals = [
  { total_over = "0", approvals = 1 },
  { total_over = "500000000", payout_over = "20000000", approvals = 2 },
]
"""


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(cli.main, list(argv))


@pytest.fixture
def policy_servers(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Path]:
    """The CLI under a policy file, on the session's Redis and ledger database."""
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    monkeypatch.setenv("NOTIFY_URL", "https://merchant.example/notify")
    monkeypatch.setenv("DISBURSE_POLICY", str(path))
    runtime.reset()
    yield tmp_path
    monkeypatch.undo()
    runtime.reset()


def rows_file(tmp_path: Path, *amounts: str, start: int) -> Path:
    rows = sample_rows("ID", len(amounts), start=start)
    lines = []
    for i, (row, amount) in enumerate(zip(rows, amounts, strict=True)):
        lines.append(json.dumps({**row, "amount": amount, "bankAccountNo": f"{start + i:013d}"}))
    path = tmp_path / f"rows{start}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_people_approve_what_carol_enqueued(policy_servers: Path) -> None:
    path = rows_file(policy_servers, "25000000", "100000", start=7000)
    enqueued = invoke("enqueue", str(path), "--market", "ID", "--operator", "carol", "--json")
    assert enqueued.exit_code == 0, enqueued.output
    data = json.loads(enqueued.stdout)
    batch_id = data["batch_id"]
    assert data["held"] == "needs 2 approvals, none given yet"

    refused = invoke("approve", batch_id, "--operator", "carol", "--no-balance-check")
    assert refused.exit_code == 1
    assert "carol created batch" in refused.stderr
    first = invoke("approve", batch_id, "--operator", "alice", "--no-balance-check")
    assert first.exit_code == 2  # still held
    assert "approvals: 1 of 2 (given by alice); 1 more needed" in first.stdout
    again = invoke("approve", batch_id, "--operator", "alice", "--no-balance-check")
    assert again.exit_code == 1 and "alice approved batch" in again.stderr

    status = json.loads(invoke("status", batch_id, "--json").stdout)
    assert status["created_by"] == "carol"
    assert status["approvals_needed"] == 2
    assert [a["who"] for a in status["approvals"]] == ["alice"]
    assert status["not_before"] is None

    second = invoke("approve", batch_id, "--operator", "bob", "--no-balance-check", "--json")
    assert second.exit_code == 0
    assert json.loads(second.stdout)["moved"] == 2

    audit = invoke("audit", "--batch", batch_id, "--json")
    actions = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(a["who"], a["action"]) for a in actions] == [
        ("carol", "enqueue"),
        ("alice", "approve"),
        ("bob", "approve"),
    ]
    assert all(a["origin"].startswith("cli@") for a in actions)
    text = invoke("audit", "--batch", batch_id).stdout
    assert "bob" in text and "approve" in text and batch_id in text
    events = invoke("events", "--batch", batch_id).stdout.splitlines()
    said = [line.split()[3:] for line in events if " batch." in line]
    assert [words[0] for words in said] == [
        "batch.held",
        "batch.approved",
        "batch.held",
        "batch.approved",
        "batch.released",
    ]
    assert said[1][1:4] == [batch_id, "by:", "alice"]


def test_enqueue_not_before_holds_until_then(policy_servers: Path) -> None:
    at = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    path = rows_file(policy_servers, "100000", start=8000)
    result = invoke(
        "enqueue", str(path), "--market", "ID", "--operator", "carol",
        "--not-before", at.astimezone().isoformat(),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"held: needs 1 approval, none given yet; scheduled for {at.isoformat()}" in (
        result.stdout
    )
    naive = invoke("enqueue", str(path), "--market", "ID", "--not-before", "2026-12-24T09:00")
    assert naive.exit_code == 1 and "has no UTC offset" in naive.output


def test_a_row_over_max_payout_is_refused(policy_servers: Path) -> None:
    path = rows_file(policy_servers, "60000000", start=9000)
    result = invoke("enqueue", str(path), "--market", "ID")
    assert result.exit_code == 1
    assert "max_payout of 50,000,000 IDR" in result.output
