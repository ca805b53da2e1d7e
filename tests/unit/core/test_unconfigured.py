"""No built-in credential or server: a market without a provider account is refused at
enqueue (nothing stored, nothing published) and left alone by the workers; a command
that needs a server not set says which and where it looked; each process says at
start which markets it serves."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.signals import beat_init, celeryd_after_setup

import worker
import worker.celery.signals  # connects the start-up checks under test
from worker import cli
from worker.celery import runtime, startup
from worker.core.config import get_settings, load_settings
from worker.core.exceptions import MarketUnavailable
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.credentials import NOWHERE, sandbox_env
from worker.flows.market_submitters import MarketSubmitters
from worker.flows.submit import Submitter
from worker.ledger import Ledger

ONLY_ID = {
    "VEXORA_ID_BASE_URL": NOWHERE,
    "VEXORA_ID_MERCHANT_NO": "M-ID",
    "VEXORA_ID_APP_SECRET": "id-secret",
}
AR_REFUSED = (
    "market AR is not configured: set VEXORA_AR_BASE_URL, VEXORA_AR_MERCHANT_NO and "
    "VEXORA_AR_APP_SECRET (or VEXORA_BASE_URL, VEXORA_MERCHANT_NO and VEXORA_APP_SECRET for "
    "every market)"
)


@pytest.fixture
def only_id(broker: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """The session's servers; a provider account for ID alone."""
    for name in sandbox_env():
        if name.startswith("VEXORA_"):
            monkeypatch.delenv(name)
    for name, value in {**ONLY_ID, "NOTIFY_URL": "https://merchant.example/notify"}.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    yield broker
    monkeypatch.undo()
    runtime.reset()


def queued_messages(client: redis.Redis) -> int:
    return sum(int(client.llen(queue)) for queue in ("submit", "resubmit"))


def test_enqueue_for_a_market_without_an_account_is_refused_and_stores_nothing(
    only_id: redis.Redis, ledger: Ledger
) -> None:
    with pytest.raises(MarketUnavailable) as caught:
        worker.enqueue_batch("AR", sample_rows("AR", 3))
    assert str(caught.value) == AR_REFUSED
    with pytest.raises(MarketUnavailable):
        worker.enqueue("ar", sample_rows("AR", 1)[0])
    with pytest.raises(MarketUnavailable):
        worker.enqueue_batch("AR", sample_rows("AR", 3), dry_run=True)
    assert ledger.state_counts() == {} and queued_messages(only_id) == 0
    # The market that has one is served.
    assert worker.enqueue_batch("ID", sample_rows("ID", 2)).accepted == 2
    assert ledger.state_counts() == {State.QUEUED: 2}


def test_cli_enqueue_for_a_market_without_an_account_is_one_line_and_exit_2(
    only_id: redis.Redis, ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = sample_rows("AR", 2)
    path = tmp_path / "ar.csv"
    path.write_text(
        ",".join(rows[0]) + "\n" + "\n".join(",".join(row.values()) for row in rows) + "\n"
    )
    assert cli.run(["enqueue", str(path), "--market", "AR", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line == f"error: configuration: {AR_REFUSED}"
    assert "id-secret" not in captured.err
    assert ledger.state_counts() == {} and queued_messages(only_id) == 0


def test_orders_of_a_market_whose_account_was_removed_stay_queued(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """Enqueued while AR had an account; the workers now serve ID alone."""
    settings = load_settings(ONLY_ID)
    ar = ledger.create_orders(
        [p for _, p in _payouts("AR", 2)], batch_id="b-ar", market="AR", hold=False
    )
    served: list[str] = []

    class IdSubmitter(Submitter):
        def __init__(self) -> None:
            pass

    submitter = IdSubmitter()

    def for_market(market: str) -> Submitter:
        settings.account(market)  # MarketUnavailable for AR
        served.append(market)
        return submitter

    chunk = [trade_no for trade_no, _ in ar]
    report = MarketSubmitters(ledger, for_market).run(chunk, budget=5)
    assert served == [] and report.done == 0 and report.leftover == []
    assert ledger.state_counts() == {State.QUEUED: 2}
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == f"2 payouts left QUEUED, not sent: {AR_REFUSED}"


def _payouts(market: str, n: int) -> list[tuple[int, object]]:
    from schemas import validate_rows

    valid, errors = validate_rows(
        market, enumerate(sample_rows(market, n)), notify_url="https://merchant.example/n"
    )
    assert not errors
    return list(valid)


# --- servers not set ---------------------------------------------------------------------


@pytest.fixture
def no_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Neither DATABASE_URL nor REDIS_URL in the environment, no .env here: but one in
    the folder above (another project's), which is not read."""
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://127.0.0.1:9/theirs\n")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    yield here
    monkeypatch.undo()
    runtime.reset()


@pytest.mark.parametrize("argv", [["batches"], ["pause"], ["status", "b1"], ["db", "status"]])
def test_a_command_that_needs_a_server_not_set_says_which_and_where_it_looked(
    no_servers: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: configuration: ")
    assert " is not set (looked in the environment and " in line
    assert f"{no_servers / '.env'} (no such file)" in line
    assert "DATABASE_URL" in line or "REDIS_URL" in line


def test_the_api_raises_a_config_error_without_a_server(no_servers: Path) -> None:
    with pytest.raises(worker.ConfigError, match=r"^(DATABASE|REDIS)_URL is not set "):
        worker.batch_summary("b1")


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["template", "--market", "ID"], ["sandbox", "--help"]]
)
def test_commands_that_need_no_server_work_without_them(
    no_servers: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(argv) == 0
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("signal", [celeryd_after_setup, beat_init], ids=["worker", "beat"])
def test_a_worker_or_beat_without_a_server_refuses_to_start_in_one_line(
    signal: object, no_servers: Path, caplog: pytest.LogCaptureFixture
) -> None:
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as exited:
        signal.send(sender=None)  # type: ignore[attr-defined]
    assert exited.value.code == os.EX_CONFIG
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("refusing to start: DATABASE_URL is not set (looked")


# --- what a process says at start ----------------------------------------------------------


def test_the_start_log_names_the_markets_served_and_those_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.startup")
    with caplog.at_level(logging.INFO, logger="test.startup"):
        startup.report(load_settings(ONLY_ID), log, "worker")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines[0] == (logging.INFO, "worker serves markets ID (merchant M-ID)")
    assert (logging.WARNING, f"worker does not serve market AR: {AR_REFUSED}") in lines
    assert [m for _, m in lines if "does not serve market" in m][1:] == [
        f"worker does not serve market {m}: market {m} is not configured: set "
        f"VEXORA_{m}_BASE_URL, VEXORA_{m}_MERCHANT_NO and VEXORA_{m}_APP_SECRET (or "
        "VEXORA_BASE_URL, VEXORA_MERCHANT_NO and VEXORA_APP_SECRET for every market)"
        for m in ("JP", "KH")
    ]
    assert any("the details API is not configured" in m for _, m in lines)
    assert any("NOTIFY_URL is not set" in m for _, m in lines)
    assert "id-secret" not in caplog.text


def test_with_no_account_at_all_the_start_log_says_no_market_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.startup")
    env = {**sandbox_env(), "NOTIFY_URL": "https://pay.example/n"}
    with caplog.at_level(logging.INFO, logger="test.startup"):
        startup.report(load_settings({}), log, "beat")
        first = len(caplog.records)
        startup.report(load_settings(env), log, "web")
    assert (
        caplog.records[0].getMessage() == "beat serves no market: no provider account is configured"
    )
    assert [r.getMessage() for r in caplog.records[first:]] == [
        "web serves markets ID+AR+JP+KH (merchant M-SANDBOX)"
    ]


def test_the_web_receiver_without_a_server_answers_503_and_says_why(
    no_servers: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from werkzeug.test import Client

    from worker.web.notify import create_app

    client = Client(create_app())
    for answer in (client.get("/healthz"), client.post("/notify", json={})):
        assert (answer.status_code, answer.get_data(as_text=True)) == (503, "not configured")
    assert "webhook receiver: DATABASE_URL is not set (looked in the environment" in caplog.text


def test_no_secret_is_built_in_so_the_repositorys_sandbox_secret_verifies_nothing(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    """The settings of a receiver with no VEXORA_* at all: a body signed with the secret
    anyone can read in this repository is refused, and the order does not move."""
    from werkzeug.test import Client

    from tests.unit.notifications import Publisher, new_order, notification, signed, state_of
    from worker.coordination.metrics import Metrics
    from worker.core.settings import Settings
    from worker.web.notify import create_app

    metrics = Metrics(fake_redis, prefix="t")
    app = create_app(ledger, Settings(), Publisher(), metrics, redis_client=fake_redis)
    trade_no = new_order(ledger)
    for secret in ("sandbox-secret", ""):
        answer = Client(app).post("/notify", json=signed(notification(trade_no), secret))
        assert answer.status_code == 401
    assert state_of(ledger, trade_no) is State.PROCESSING
