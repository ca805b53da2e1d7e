"""The batch commands through click's runner (and ``status --watch`` on a pseudo-terminal),
on the session's own PostgreSQL and Redis: what a person reads, and the exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from click.testing import CliRunner, Result

from schemas import MARKETS
from tests.support.servers import empty_ledger
from worker import cli
from worker.celery import runtime
from worker.core.config import get_settings
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.credentials import sandbox_env
from worker.dev.redis_server import RedisServer
from worker.ledger import Ledger

# Addresses where nothing listens (port 9), for a server a command does not reach.
NOWHERE_REDIS = "redis://127.0.0.1:9/0"


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(cli.main, list(argv))


def write_csv(path: Path, rows: list[dict[str, str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def enqueue(path: Path, market: str, *options: str) -> str:
    result = invoke("enqueue", str(path), "--market", market, "--json", *options)
    assert result.exit_code == 0, result.output
    batch_id = json.loads(result.stdout)["batch_id"]
    assert isinstance(batch_id, str)
    return batch_id


@pytest.fixture
def servers(broker: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI on the session's Redis and ledger database, rows sent an HTTPS notify URL."""
    monkeypatch.setenv("NOTIFY_URL", "https://merchant.example/notify")
    runtime.reset()
    yield
    monkeypatch.undo()
    runtime.reset()


# --- the columns of a rows file ---------------------------------------------------------


def test_fields_prints_every_markets_columns() -> None:
    result = invoke("fields")
    assert result.exit_code == 0
    for market in MARKETS:
        assert f"{market}\n\n| column | required | format | example |" in result.output
    assert "| `bankNumber` | yes | digits only" in invoke("fields", "--market", "jp").output


def test_template_writes_a_file_enqueue_accepts(servers: None, tmp_path: Path) -> None:
    path = tmp_path / "kh.csv"
    result = invoke("template", "--market", "KH", "-o", str(path))
    assert result.exit_code == 0 and path.read_text().startswith("reference,currency,")
    enqueued = invoke("enqueue", str(path), "--market", "KH")
    assert enqueued.exit_code == 0, enqueued.output
    assert "3 payouts queued" in enqueued.output


def test_a_file_error_names_the_path_in_one_line(servers: None, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "out.csv"
    for argv in (["template", "--market", "ID", "-o"], ["export", "b-none", "-o"]):
        result = invoke(*argv, str(missing))
        assert result.exit_code == 1
        assert "Traceback" not in result.output and len(result.output.splitlines()) == 1
    batch_id = enqueue(write_csv(tmp_path / "id.csv", sample_rows("ID", 1)), "ID")
    result = invoke("export", batch_id, "-o", str(missing))
    assert result.exit_code == 1
    assert result.output == f"error: cannot write {missing}: No such file or directory\n"


def test_a_file_of_another_market_is_one_line(servers: None, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "jp.csv", sample_rows("JP", 5))
    result = invoke("enqueue", str(path), "--market", "ID")
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith(f"error: {path}: the columns look like market JP's, not ID's")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_files_are_enqueued(
    servers: None, tmp_path: Path, ledger: Ledger, delimiter: str
) -> None:
    path = write_csv(tmp_path / "ar.csv", sample_rows("AR", 4), delimiter)
    summary = ledger.batch(enqueue(path, "AR"))
    assert summary is not None and summary.counts == {State.QUEUED: 4}


def test_a_bad_notify_url_is_said_once_not_per_row(
    servers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_URL", "http://merchant.example/notify")  # JP wants https
    runtime.reset()
    result = invoke(
        "enqueue", str(write_csv(tmp_path / "jp.csv", sample_rows("JP", 50))), "--market", "JP"
    )
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("error: configuration: NOTIFY_URL") and "https" in line


def test_enqueuing_references_again_names_the_batch_that_holds_them(
    servers: None, tmp_path: Path
) -> None:
    rows = sample_rows("ID", 3)
    first = enqueue(write_csv(tmp_path / "a.csv", rows[:1]), "ID")
    again = invoke("enqueue", str(write_csv(tmp_path / "b.csv", rows)), "--market", "ID")
    assert again.exit_code == 0
    assert f"batch {again.output.split()[1]}" in again.output
    assert "2 payouts queued" in again.output
    assert f"1 row already enqueued in batch {first}" in again.output
    # The same file again is a duplicate of its batch; allowed, its references still hold.
    everything = invoke("enqueue", str(tmp_path / "b.csv"), "--market", "ID", "--allow-duplicate")
    assert everything.output.startswith("nothing new to pay")
    assert "3 rows already enqueued" not in everything.output  # split by batch
    assert f"1 row already enqueued in batch {first}" in everything.output


def test_one_payout_is_said_in_the_singular(servers: None, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", sample_rows("ID", 1))
    assert (
        "dry run: 1 payout valid"
        in invoke("enqueue", str(path), "--market", "ID", "--dry-run").output
    )
    result = invoke("enqueue", str(path), "--market", "ID", "--hold")
    assert ": 1 payout held for approval" in result.output
    batch_id = result.output.split()[1].rstrip(":")
    assert invoke("cancel", batch_id).output == "cancelled 1 unsent payout\n"


# --- listing batches --------------------------------------------------------------------


def test_batches_lists_them_by_state_and_time(servers: None, tmp_path: Path) -> None:
    open_batch = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 2)), "ID")
    held = enqueue(write_csv(tmp_path / "b.csv", sample_rows("ID", 1, start=5)), "ID", "--hold")
    lines = invoke("batches").output.splitlines()
    assert [line.split()[0] for line in lines] == [held, open_batch]
    assert "held" in lines[0] and "1 payout " in lines[0] and "HELD 1" in lines[0]
    listed = [
        json.loads(line)
        for line in invoke("batches", "--state", "open", "--json").output.splitlines()
    ]
    assert [b["batch_id"] for b in listed] == [open_batch]
    assert listed[0]["state"] == "open" and listed[0]["counts"] == {"QUEUED": 2}
    assert invoke("batches", "--since", "2099-01-01").output == "no batches since 2099-01-01\n"
    assert len(invoke("batches", "--since", "10m").output.splitlines()) == 2
    wrong = invoke("batches", "--since", "yesterday")
    assert wrong.exit_code == 1 and "30m, 12h or 7d" in wrong.output


# --- status and --watch -----------------------------------------------------------------


def settle_later(ledger: Ledger, trade_nos: list[str], delay: float = 0.15) -> threading.Thread:
    """Each order claimed and made final, one every ``delay`` seconds (the first FAILED)."""

    def run() -> None:
        for index, trade_no in enumerate(trade_nos):
            time.sleep(delay)
            ledger.claim(trade_no)
            target = State.FAILED if index == 0 else State.SUCCEEDED
            status = "00029" if index == 0 else "0000"
            ledger.transition(trade_no, target, source="webhook", provider_status=status)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def trade_nos(ledger: Ledger, batch_id: str) -> list[str]:
    return [trade_no for page in ledger.iter_batch(batch_id) for trade_no in page]


def test_watch_piped_is_plain_lines_then_a_summary(
    servers: None, tmp_path: Path, ledger: Ledger
) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 4)), "ID")
    thread = settle_later(ledger, trade_nos(ledger, batch_id), delay=0.3)
    result = invoke("status", batch_id, "--watch", "--interval", "0.05")
    thread.join()
    assert result.exit_code == 0
    assert "\r" not in result.output
    lines = result.output.splitlines()
    progress = [line for line in lines if " settled (" in line]
    settled = [int(line.split("/", 1)[0]) for line in progress]
    # Followed as it went (how many settled before the first frame depends on the load).
    assert settled[0] < 4 and settled == sorted(settled)
    assert progress[-1].startswith("4/4 settled (100%)")
    assert "SUCCEEDED 3  FAILED 1" in progress[-1] and "/s, " in progress[-1]
    assert f"batch {batch_id} settled: 4 payouts (SUCCEEDED 3  FAILED 1)" in result.output
    assert f"disburse export {batch_id}" in result.output


def test_watch_on_a_terminal_draws_a_bar_with_rate_and_eta(
    servers: None, tmp_path: Path, ledger: Ledger, redis_server: RedisServer, ledger_url: str
) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 4)), "ID")
    main, child = pty.openpty()
    env = {**os.environ, "DATABASE_URL": ledger_url, "REDIS_URL": redis_server.url}
    env.update(COLUMNS="120", TERM="xterm")
    argv = [sys.executable, "-m", "worker", "status", batch_id, "--watch", "--interval", "0.1"]
    process = subprocess.Popen(argv, stdout=child, stderr=child, env=env)
    os.close(child)
    shown = b""
    while b"0/4" not in shown and (chunk := _read(main)):  # its first frame, then settle
        shown += chunk
    thread = settle_later(ledger, trade_nos(ledger, batch_id), delay=0.4)
    while chunk := _read(main):
        shown += chunk
    thread.join()
    assert process.wait(timeout=30) == 0
    text = shown.decode()
    assert "━" in text  # rich's bar
    assert "4/4" in text and "100%" in text and "payouts/s" in text and "ETA" in text
    assert "SUCCEEDED 3  FAILED 1" in text
    assert f"batch {batch_id} settled: 4 payouts" in text


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # the child closed the terminal
        return b""


def test_watch_of_a_held_batch_says_it_waits_for_approve_and_ends(
    servers: None, tmp_path: Path
) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 2)), "ID", "--hold")
    result = invoke("status", batch_id, "--watch", "--interval", "0.05")
    assert result.exit_code == 0
    assert f"2 payouts wait for `disburse approve {batch_id}`" in result.output
    said = invoke("status", batch_id).output
    assert (
        f"HELD (needs 1 approval, none given yet): waits for `disburse approve {batch_id}`" in said
    )


def test_watch_says_a_pause_plainly(servers: None, tmp_path: Path, ledger: Ledger) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 2)), "ID")
    assert invoke("pause", "--reason", "bank holiday").exit_code == 0
    thread = settle_later(ledger, trade_nos(ledger, batch_id), delay=0.3)
    result = invoke("status", batch_id, "--watch", "--interval", "0.05")
    thread.join()
    assert "PAUSED (every provider account: bank holiday): `disburse resume`" in result.output


def test_watch_rides_through_a_server_that_does_not_answer(
    servers: None, tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 2)), "ID")
    real = runtime.ledger().batch
    calls: list[str] = []
    # The status command's first read answers; the watch's first two do not.
    failures = {
        2: psycopg.OperationalError("server closed the connection"),
        3: redis.TimeoutError(),
    }

    def flaky(batch: str) -> object:
        calls.append(batch)
        if len(calls) in failures:
            raise failures[len(calls)]
        return real(batch)

    monkeypatch.setattr(runtime.ledger(), "batch", flaky)
    thread = settle_later(ledger, trade_nos(ledger, batch_id), delay=0.3)
    result = invoke("status", batch_id, "--watch", "--interval", "0.05")
    thread.join()
    assert result.exit_code == 0, result.output
    reconnecting = [line for line in result.output.splitlines() if "reconnecting" in line]
    assert len(reconnecting) == 2
    assert "cannot connect to PostgreSQL at postgresql://" in reconnecting[0]
    assert "cannot reach Redis at redis://" in reconnecting[1]
    assert f"batch {batch_id} settled: 2 payouts" in result.output


def test_watch_piped_goes_on_through_a_redis_restart(
    tmp_path: Path, ledger: Ledger, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RedisServer() as own:
        monkeypatch.setenv("REDIS_URL", own.url)
        monkeypatch.setenv("DATABASE_URL", ledger_url)
        monkeypatch.setenv("NOTIFY_URL", "https://merchant.example/notify")
        for name, value in sandbox_env().items():
            monkeypatch.setenv(name, value)
        runtime.reset()
        try:
            batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 3)), "ID")
        finally:
            monkeypatch.undo()
            runtime.reset()
        env = {**os.environ, "DATABASE_URL": ledger_url, "REDIS_URL": own.url}
        argv = [sys.executable, "-m", "worker", "status", batch_id, "--watch", "--interval", "0.2"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        own.stop()  # the watch reads the pause switch from Redis on every update
        down = [process.stdout.readline().decode() for _ in range(2)]
        own.start()
        settle_later(ledger, trade_nos(ledger, batch_id), delay=0.1).join()
        rest = process.stdout.read().decode()
        assert process.wait(timeout=30) == 0
    assert first.startswith("0/3 settled")
    assert all("pause switch unknown: cannot reach Redis at redis://" in line for line in down)
    assert f"batch {batch_id} settled: 3 payouts" in rest


def test_status_text_and_json_keep_their_keys(servers: None, tmp_path: Path) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 1)), "ID")
    data = json.loads(invoke("status", batch_id, "--json").output)
    assert {"batch_id", "total", "counts"} <= set(data)
    assert data["counts"] == {"QUEUED": 1} and data["created"].endswith("Z")
    assert not any(key.startswith("n:") for key in data["counts"])
    text = invoke("status", batch_id).output
    assert text.startswith(f"batch {batch_id}  (ID)  1 payout  created 20")
    missing = invoke("status", "b-none")
    assert missing.exit_code == 1 and "`disburse batches` lists them" in missing.output


def test_status_says_who_paused_the_batch_account(servers: None, tmp_path: Path) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 1)), "ID")
    account = get_settings().account("ID")
    reason = "circuit breaker: 5 first attempts refused within 30 s (codes 9001 x5)"
    runtime.pause_switch(account).pause(reason, who="circuit-breaker")
    try:
        runtime.redis_client().flushall()  # a wipe: the pause comes back from PostgreSQL
        paused = json.loads(invoke("status", batch_id, "--json").output)["paused"]
        text = invoke("status", batch_id).output
    finally:
        runtime.pause_switch(account).resume(who="test")
    assert (paused["account"], paused["reason"]) == (account.name, reason)
    assert paused["who"] == "circuit-breaker" and paused["since"].startswith("20")
    assert f"PAUSED: provider account {account.name}: {reason} (by circuit-breaker)" in text


def test_export_has_the_batch_iso_times_and_keeps_its_columns(
    servers: None, tmp_path: Path
) -> None:
    batch_id = enqueue(write_csv(tmp_path / "a.csv", sample_rows("ID", 2)), "ID")
    result = invoke("export", batch_id)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 and {r["batchId"] for r in rows} == {batch_id}
    for column in ("reference", "tradeNo", "state", "amount", "platformTradeNo"):
        assert column in rows[0]
    assert rows[0]["createdAt"].endswith("Z") and "T" in rows[0]["createdAt"]


# --- settings and servers ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "http://u:hunter2@127.0.0.1:6379/0"])
def test_a_malformed_redis_url_is_one_line_naming_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    get_settings.cache_clear()
    try:
        result = invoke("pause")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("error: configuration: REDIS_URL must start with redis://")
    assert "hunter2" not in line


def test_a_port_where_redis_does_not_answer_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, ledger: Ledger, ledger_url: str
) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
        # The pause is kept in PostgreSQL first; its cache in Redis is what fails.
        monkeypatch.setenv("DATABASE_URL", ledger_url)
        runtime.reset()
        try:
            result = invoke("pause")
            timeout = runtime.redis_client().connection_pool.connection_kwargs["socket_timeout"]
        finally:
            monkeypatch.undo()
            runtime.reset()
            empty_ledger(ledger.pool)
    assert timeout == runtime.INTERACTIVE_TIMEOUT < get_settings().read_timeout
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith(f"error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (")
    assert "hunter2" not in line


# --- help -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    ["enqueue", "status", "export", "approve", "cancel", "batches", "fields", "template"],
)
def test_every_batch_command_has_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output
    options = [line for line in result.output.splitlines() if line.strip().startswith("--")]
    assert all(len(line.split("  ")) > 1 for line in options if "--help" not in line)


def test_a_schema_behind_the_code_says_to_upgrade_not_a_traceback(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.db import migrate

    migrate.upgrade(empty_database)
    newest = migrate.migrations()[-1].version
    with psycopg.connect(empty_database, autocommit=True) as conn:
        # As if this code's newest migration were not applied yet, one of its columns absent.
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (newest,))
        conn.execute("ALTER TABLE batches RENAME COLUMN hold_reason TO hold_reason_old")
    monkeypatch.setenv("DATABASE_URL", empty_database)
    monkeypatch.setenv("REDIS_URL", NOWHERE_REDIS)
    runtime.reset()
    try:
        result = invoke("status", "b1")
    finally:
        monkeypatch.undo()
        runtime.reset()
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert "schema is behind" in line and "`disburse db upgrade`" in line


def test_a_postgresql_that_does_not_answer_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.dev.redis_server import free_port

    port = free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://payouts:hunter2@127.0.0.1:{port}/ledger")
    monkeypatch.setenv("REDIS_URL", NOWHERE_REDIS)
    runtime.reset()
    try:
        result = invoke("batches")
        timeout = runtime.pool().timeout
    finally:
        monkeypatch.undo()
        runtime.reset()
    assert timeout == runtime.INTERACTIVE_TIMEOUT
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("error: cannot connect to PostgreSQL at postgresql://payouts:***@")
    assert "hunter2" not in line
