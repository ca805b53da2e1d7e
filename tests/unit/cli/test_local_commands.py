"""``disburse demo`` and ``disburse up`` on a database of the user's: the sandbox must
never take payouts that are not final there (it would "pay" them)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from schemas import validate_rows
from worker.cli import main
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.ledger import Ledger


@pytest.mark.parametrize("command", [["demo", "--payouts", "4"], ["up", "--port", "0"]])
def test_a_database_with_open_payouts_is_refused_before_anything_starts(
    command: list[str], ledger: Ledger, ledger_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    valid, _ = validate_rows("ID", enumerate(sample_rows("ID", 2)), notify_url="https://x.io/n")
    ledger.create_orders([payout for _, payout in valid], batch_id="b-yours", market="ID")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VEXORA_BASE_URL", raising=False)
    result = CliRunner().invoke(main, command, env={"DATABASE_URL": ledger_url})
    assert result.exit_code == 1, result.output
    assert "holds 2 payouts not yet final, which the sandbox provider must not take" in (
        result.output
    )
    assert ledger.state_counts() == {State.QUEUED: 2}
    assert list(tmp_path.iterdir()) == []  # no .env, no logs: nothing started


def test_an_unreachable_database_is_a_system_problem(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo"], env={"DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/x"}
    )
    assert result.exit_code == 2, result.output
    assert "cannot connect to PostgreSQL at" in result.output and "s3cret" not in result.output


def test_a_port_is_free_for_up_unless_something_listens_on_it() -> None:
    from worker.dev.up import _port_free

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert not _port_free(port)
    # The server side closes first: its end of the connection stays in TIME_WAIT, as
    # the receiver's do after a run of `disburse up`; the next run must start anyway.
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()
    listener.close()
    client.close()
    assert _port_free(port)


@pytest.mark.parametrize(("command", "module"), [("demo", "demo"), ("up", "up")])
def test_the_latency_flags_reach_the_sandbox(
    command: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    seen: dict[str, object] = {}

    def run(**kwargs: object) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(importlib.import_module(f"worker.dev.{module}"), "run", run)
    flags = ["--latency-median", "0.25", "--latency-sigma", "0.8"]
    result = CliRunner().invoke(main, [command, *flags])
    assert result.exit_code == 0, result.output
    assert (seen["latency_median"], seen["latency_sigma"]) == (0.25, 0.8)
    refused = CliRunner().invoke(main, [command, "--latency-median", "-1"])
    assert refused.exit_code != 0
    assert "'--latency-median': -1.0 is not in the range x>=0" in refused.output
