"""Idempotent enqueues (issue 21 item 7): once a batch is stored the enqueue succeeds,
publishing or not, and a batch's idempotency key (by default `disburse enqueue`'s digest
of the file) returns the first batch instead of paying everyone twice."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from click.testing import CliRunner, Result
from kombu.exceptions import OperationalError

from tests.unit.cli.test_cli_batch import write_csv
from tests.unit.pending_orders import make_world
from worker import cli
from worker.celery import runtime
from worker.core.config import get_settings, load_settings
from worker.core.exceptions import ConfigError, IdempotencyKeyReused, InputError
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.credentials import sandbox_env, sandbox_settings
from worker.flows.producer import Producer
from worker.flows.report import iso_utc
from worker.ledger import Ledger
from worker.ledger.idempotency import file_key
from worker.ledger.sql import ENQUEUE_LOCK

SETTINGS = sandbox_settings(env={"NOTIFY_URL": "https://merchant.example/notify"})


@pytest.fixture(autouse=True)
def sandbox_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command reads its settings from the environment: the sandbox's account."""
    for name, value in sandbox_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def unreachable_broker(trade_nos: Sequence[str]) -> None:
    raise OperationalError("Error 111 connecting to redis://:hunter2@10.0.0.9:6379. Refused.")


def producer(ledger: Ledger, publish: Callable[[Sequence[str]], object]) -> Producer:
    return Producer(ledger, SETTINGS, publish=publish, sign=lambda market: lambda f, t: None)


def unreferenced(market: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows without a reference: nothing but a batch key tells a second enqueue of them."""
    return [
        {k: v for k, v in row.items() if k != "reference"}
        for row in sample_rows(market, n, start=start)
    ]


def numbered(rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(rows, start=1))


def counts(ledger: Ledger) -> tuple[int, int]:
    """(batches, orders) in the ledger."""
    with ledger.pool.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM orders)"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


# --- a failure after the commit is no failure -------------------------------------------


def test_a_batch_stored_but_not_published_is_enqueued_and_says_so(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "worker.flows.producer")
    result = producer(ledger, unreachable_broker).enqueue_batch(
        "ID", numbered(unreferenced("ID", 3))
    )
    assert result.batch_id is not None and result.accepted == 3
    assert result.published is False
    assert result.to_dict() == {
        "batch_id": result.batch_id,
        "accepted": 3,
        "rejected": [],
        "published": False,
    }
    assert {o.state for o in ledger.get_many(result.trade_nos) if o} == {State.QUEUED}
    (record,) = caplog.records
    assert result.batch_id in record.getMessage() and "SWEEP_AFTER" in record.getMessage()
    assert "hunter2" not in caplog.text  # the broker's URL may carry its password


def test_the_sweeper_sends_the_orders_of_a_batch_not_published(
    fake_redis: redis.Redis, ledger: Ledger
) -> None:
    world = make_world(fake_redis, ledger)
    result = producer(world.ledger, unreachable_broker).enqueue_batch(
        "ID", numbered(unreferenced("ID", 2))
    )
    assert not result.published
    world.later(world.settings.sweep_after + 1)
    assert world.next_pass().swept == 2
    assert sorted(world.submissions.published()) == sorted(result.trade_nos)


def test_a_single_payout_stored_but_not_published_is_returned_queued(ledger: Ledger) -> None:
    order = producer(ledger, unreachable_broker).enqueue("JP", unreferenced("JP", 1)[0])
    assert order.state is State.QUEUED and ledger.get(order.trade_no) == order


@pytest.fixture
def failing_broker(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "producer", lambda: producer(ledger, unreachable_broker))


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(cli.main, list(argv))


def test_cli_exits_0_with_the_batch_id_when_publishing_fails_after_the_commit(
    failing_broker: None, ledger: Ledger, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "id.csv", unreferenced("ID", 2))
    result = invoke("enqueue", str(path), "--market", "ID", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accepted"] == 2 and data["published"] is False
    summary = ledger.batch(data["batch_id"])
    assert summary is not None and summary.counts == {State.QUEUED: 2}
    assert f"warning: batch {data['batch_id']} is stored" in result.stderr
    assert "do not enqueue the file again" in result.stderr
    text = invoke("enqueue", str(path), "--market", "ID", "--allow-duplicate")
    assert text.exit_code == 0 and "2 payouts queued" in text.stdout
    assert "could not be sent" in text.stderr


# --- idempotency keys through the Python API --------------------------------------------


@pytest.fixture
def published() -> list[list[str]]:
    return []


@pytest.fixture
def keyed(ledger: Ledger, published: list[list[str]]) -> Producer:
    return producer(ledger, lambda trade_nos: published.append(list(trade_nos)))


def test_the_same_key_and_rows_return_the_first_batch_and_store_nothing(
    keyed: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    rows = numbered(unreferenced("KH", 3))
    first = keyed.enqueue_batch("KH", rows, idempotency_key="payroll-2026-05")
    again = keyed.enqueue_batch("kh", rows, idempotency_key="payroll-2026-05")
    assert again.batch_id == first.batch_id and again.duplicate_of == first.batch_id
    assert again.accepted == 3 and sorted(again.trade_nos) == sorted(first.trade_nos)
    assert again.to_dict() == {
        "batch_id": first.batch_id,
        "accepted": 3,
        "rejected": [],
        "duplicate_of": first.batch_id,
    }
    assert counts(ledger) == (1, 3) and published == [first.trade_nos]
    # Another market is another scope: the key is free there.
    other = keyed.enqueue_batch(
        "ID", numbered(unreferenced("ID", 1)), idempotency_key="payroll-2026-05"
    )
    assert other.duplicate_of is None and other.batch_id != first.batch_id


def test_the_public_api_takes_the_key(
    keyed: Producer, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    import worker

    monkeypatch.setattr(runtime, "producer", lambda: keyed)
    rows = unreferenced("AR", 2)
    first = worker.enqueue_batch("AR", rows, idempotency_key="k-1")
    assert worker.enqueue_batch("AR", rows, idempotency_key="k-1").duplicate_of == first.batch_id
    assert counts(ledger) == (1, 2)


def test_a_key_given_again_with_other_rows_is_refused(
    keyed: Producer, ledger: Ledger, published: list[list[str]]
) -> None:
    first = keyed.enqueue_batch("ID", numbered(unreferenced("ID", 2)), idempotency_key="run-7")
    other = numbered(unreferenced("ID", 2, start=50))
    with pytest.raises(IdempotencyKeyReused) as caught:
        keyed.enqueue_batch("ID", other, idempotency_key="run-7")
    assert caught.value.batch_id == first.batch_id and "run-7" in str(caught.value)
    assert counts(ledger) == (1, 2) and len(published) == 1


@pytest.mark.parametrize("key", ["", "two words", "x" * 201, "ключ"])
def test_a_malformed_key_is_refused(keyed: Producer, ledger: Ledger, key: str) -> None:
    with pytest.raises(InputError, match="idempotency key"):
        keyed.enqueue_batch("ID", numbered(unreferenced("ID", 1)), idempotency_key=key)
    assert counts(ledger) == (0, 0)


def test_a_key_older_than_the_window_makes_a_new_batch(keyed: Producer, ledger: Ledger) -> None:
    rows = numbered(unreferenced("JP", 2))
    first = keyed.enqueue_batch("JP", rows, idempotency_key="k")
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE batches SET created_at = now() - make_interval(secs => %s) WHERE id = %s",
            (SETTINGS.idempotency_window + 60, first.batch_id),
        )
    again = keyed.enqueue_batch("JP", rows, idempotency_key="k")
    assert again.duplicate_of is None and again.batch_id != first.batch_id
    assert counts(ledger) == (2, 4)
    # The key now holds the new batch.
    third = keyed.enqueue_batch("JP", rows, idempotency_key="k")
    assert third.duplicate_of == again.batch_id


def test_a_dry_run_records_no_key(keyed: Producer, ledger: Ledger) -> None:
    rows = numbered(unreferenced("ID", 2))
    assert keyed.enqueue_batch("ID", rows, idempotency_key="k", dry_run=True).dry_run
    real = keyed.enqueue_batch("ID", rows, idempotency_key="k")
    assert real.duplicate_of is None and real.accepted == 2


def test_the_database_holds_one_batch_per_market_and_key(ledger: Ledger) -> None:
    insert = (
        "INSERT INTO batches (id, market, row_count, idempotency_key) VALUES (%s, 'ID', 0, 'k')"
    )
    with ledger.pool.connection() as conn:
        conn.execute(insert, ("b1",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, ("b2",))


def test_concurrent_enqueues_with_one_key_make_one_batch(
    keyed: Producer, ledger: Ledger, ledger_url: str, published: list[list[str]]
) -> None:
    """Both pass the early look-up before either stores its batch: they meet at the
    enqueue lock, which the test holds until both wait for it."""
    rows = numbered(unreferenced("ID", 3))
    results: list[Any] = []

    def enqueue() -> None:
        results.append(keyed.enqueue_batch("ID", rows, idempotency_key="same"))

    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    threads = [threading.Thread(target=enqueue) for _ in range(2)]
    with psycopg.connect(ledger_url, autocommit=True) as holder, holder.transaction():
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (ENQUEUE_LOCK,))
        for thread in threads:
            thread.start()
        # Until both enqueues wait on the lock (or one ended without: then it failed).
        seen = 0
        while seen != 2 and all(thread.is_alive() for thread in threads):
            threading.Event().wait(0.01)
            seen = holder.execute(waiting).fetchone()[0]  # type: ignore[index]
        assert seen == 2
    for thread in threads:
        thread.join()
    assert len(results) == 2
    assert results[0].batch_id == results[1].batch_id
    assert sorted(r.duplicate_of is not None for r in results) == [False, True]
    assert counts(ledger) == (1, 3) and len(published) == 1


# --- the command ------------------------------------------------------------------------


@pytest.fixture
def servers(keyed: Producer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "producer", lambda: keyed)


def enqueue_json(path: Path, *options: str) -> dict[str, Any]:
    result = invoke("enqueue", str(path), "--market", "ID", "--json", *options)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_the_same_file_enqueued_twice_is_one_batch(
    servers: None, ledger: Ledger, tmp_path: Path, published: list[list[str]]
) -> None:
    path = write_csv(tmp_path / "id.csv", unreferenced("ID", 3))
    first = enqueue_json(path)
    again = enqueue_json(path)
    assert again == {**first, "duplicate_of": first["batch_id"]}
    assert counts(ledger) == (1, 3) and len(published) == 1
    text = invoke("enqueue", str(path), "--market", "ID")
    assert text.exit_code == 0
    summary = ledger.batch(first["batch_id"])
    assert summary is not None
    assert text.stdout.startswith(
        f"duplicate of batch {first['batch_id']} enqueued at {iso_utc(summary.created_ms)} "
        "(same file): nothing new stored or sent\n"
    )
    with ledger.pool.connection() as conn:
        stored = conn.execute("SELECT idempotency_key FROM batches").fetchone()
    assert stored == (file_key(path.read_bytes()),)


def test_allow_duplicate_enqueues_the_file_again(
    servers: None, ledger: Ledger, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "id.csv", unreferenced("ID", 2))
    first = enqueue_json(path)
    again = enqueue_json(path, "--allow-duplicate")
    assert again["batch_id"] != first["batch_id"] and "duplicate_of" not in again
    assert counts(ledger) == (2, 4)
    both = invoke(
        "enqueue", str(path), "--market", "ID", "--allow-duplicate", "--idempotency-key", "k"
    )
    assert both.exit_code == 1 and "exclude each other" in both.output


def test_an_explicit_key_reused_for_another_file_is_one_line_and_exit_1(
    servers: None, ledger: Ledger, tmp_path: Path
) -> None:
    first = write_csv(tmp_path / "a.csv", unreferenced("ID", 1))
    batch = enqueue_json(first, "--idempotency-key", "may")["batch_id"]
    assert enqueue_json(first, "--idempotency-key", "may")["duplicate_of"] == batch
    other = write_csv(tmp_path / "b.csv", unreferenced("ID", 1, start=9))
    result = invoke("enqueue", str(other), "--market", "ID", "--idempotency-key", "may")
    assert result.exit_code == 1
    assert result.output == (
        f"error: idempotency key 'may' was given to batch {batch} with other rows: "
        "nothing was enqueued; new rows need a new key\n"
    )
    assert counts(ledger) == (1, 1)


def test_a_dry_run_of_the_file_records_nothing(
    servers: None, ledger: Ledger, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "id.csv", unreferenced("ID", 2))
    assert invoke("enqueue", str(path), "--market", "ID", "--dry-run").exit_code == 0
    assert "duplicate_of" not in enqueue_json(path)
    assert counts(ledger) == (1, 2)


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 30 * 86400.0), ("7d", 7 * 86400.0), ("0", 0.0)]
)
def test_the_window_is_a_duration_setting(value: str | None, seconds: float) -> None:
    env = {} if value is None else {"IDEMPOTENCY_WINDOW": value}
    assert load_settings(env).idempotency_window == seconds


def test_a_bad_window_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="IDEMPOTENCY_WINDOW"):
        load_settings({"IDEMPOTENCY_WINDOW": "a month"})


def test_the_rows_digest_tells_rows_apart_by_value_type_and_order() -> None:
    from decimal import Decimal

    from worker.ledger.idempotency import rows_digest

    a, b = {"amount": "100000", "x": "1"}, {"amount": "200000"}
    assert rows_digest("ID", [a, b]) == rows_digest("ID", [{"x": "1", "amount": "100000"}, b])
    different = [
        rows_digest("ID", [b, a]),
        rows_digest("AR", [a, b]),
        rows_digest("ID", [{"amount": 100000}]),
        rows_digest("ID", [{"amount": "100000"}]),
        rows_digest("ID", [{"amount": Decimal("100000")}]),
        rows_digest("ID", [{"amount": 100000.0}]),
        rows_digest("ID", [{1: 2**70}]),  # JSON has no such row: the slower, exact path
    ]
    assert len(set(different)) == len(different)
    assert rows_digest("ID", [{1: 2**70}]) == rows_digest("ID", [{1: 2**70}])
