"""The event feed (which rows are events, the horizon over transactions still open), the
webhook signature and settings, and ``disburse events``, on a real PostgreSQL (the
sender: test_sender.py)."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from schemas import Payout
from tests.app_receiver import AppReceiver
from tests.unit.outbox.support import ACCOUNT, NAME, SECRET, new_order, sender, walk
from worker.core.config import load_settings
from worker.core.exceptions import ConfigError
from worker.core.states import State
from worker.ledger import Ledger, new_batch_id
from worker.outbox import EVENT_TYPES, Deliveries, Feed, signature_header, verify_webhook


def last_id(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM order_events").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def feed(ledger: Ledger) -> Feed:
    return Feed(ledger.pool)


def types_of(feed: Feed, trade_no: str, after: int = 0) -> list[str]:
    page = feed.read(after, 100, wait=5.0)
    return [e.type for e in page.events if e.trade_no == trade_no]


# which rows are events ---------------------------------------------------------------
def test_a_payout_s_events_are_the_states_the_application_sees(ledger: Ledger, feed: Feed) -> None:
    start = last_id(ledger.pool)
    paid = new_order(ledger)
    # Sent, not sent after all (back to QUEUED), sent again, outcome unknown, accepted.
    walk(ledger, paid, State.SUBMITTING, State.QUEUED, State.SUBMITTING, State.UNKNOWN)
    walk(ledger, paid, State.PROCESSING, platform_trade_no="PT77", provider_status="0015")
    assert ledger.restart_queued([paid]) == []  # not QUEUED: no sweeper row either
    walk(ledger, paid, State.SUCCEEDED)
    # A report contradicting the final state is recorded, and is no event.
    ledger.transition(paid, State.FAILED, source="webhook", report=True)
    walk(ledger, paid, State.REVERSED)

    held = new_order(ledger, hold=True)
    walk(ledger, held, State.QUEUED, State.CANCELLED)
    reviewed = new_order(ledger)
    ledger.restart_queued([reviewed])  # republished by the sweeper: no event
    walk(ledger, reviewed, State.SUBMITTING, State.REVIEW, State.FAILED)

    assert types_of(feed, paid, start) == [
        "payout.queued",
        "payout.processing",
        "payout.succeeded",
        "payout.reversed",
    ]
    assert types_of(feed, held, start) == ["payout.held", "payout.queued", "payout.cancelled"]
    assert types_of(feed, reviewed, start) == ["payout.queued", "payout.review", "payout.failed"]
    assert set(EVENT_TYPES.values()) == {
        "payout.held",
        "payout.queued",
        "payout.processing",
        "payout.succeeded",
        "payout.failed",
        "payout.review",
        "payout.cancelled",
        "payout.reversed",
    }


def test_an_event_carries_the_payout_and_the_provider_s_word_and_no_personal_data(
    ledger: Ledger, feed: Feed
) -> None:
    start = last_id(ledger.pool)
    trade_no = new_order(ledger)
    walk(ledger, trade_no, State.SUBMITTING)
    walk(ledger, trade_no, State.PROCESSING, platform_trade_no="PT20241130000123")
    ledger.transition(
        trade_no,
        State.FAILED,
        source="webhook",
        provider_status="00029",
        provider_message=f"REJECTED_TRANSACTION account {ACCOUNT}",
    )
    events = [e for e in feed.read(start, 100, wait=5.0).events if e.trade_no == trade_no]
    failed = events[-1]
    order = ledger.get(trade_no)
    assert order is not None
    body = failed.to_dict()
    assert body["id"] == f"evt_{failed.cursor}"
    assert body["type"] == "payout.failed"
    assert abs(body["created"] - time.time()) < 60
    assert body["data"] == {
        "trade_no": trade_no,
        "reference": order.reference,
        "batch_id": order.batch_id,
        "market": "ID",
        "currency": "IDR",
        "amount": "150000.00",
        "state": "FAILED",
        "previous_state": "PROCESSING",
        # Known from an earlier event of the payout: the same on every delivery.
        "platform_trade_no": "PT20241130000123",
        "provider_status": "00029",
        "provider_message": "REJECTED_TRANSACTION account *********4636",
        "reason": None,
        "source": "webhook",
        "retry_of": None,
    }
    wire = " ".join(e.body() for e in events)
    for personal in (ACCOUNT, NAME, "Budi", "budi@example.com", "Santoso"):
        assert personal not in wire
    assert json.loads(failed.body()) == body


def test_a_batch_s_events_only(ledger: Ledger, feed: Feed) -> None:
    start = last_id(ledger.pool)
    mine, other = new_order(ledger), new_order(ledger)
    order = ledger.get(mine)
    assert order is not None
    page = feed.read(start, 100, wait=5.0, batch_id=order.batch_id)
    assert [e.trade_no for e in page.events] == [mine]
    assert other in {e.trade_no for e in feed.read(start, 100, wait=5.0).events}


# the horizon -------------------------------------------------------------------------
def _open_event(ledger_url: str, trade_no: str) -> psycopg.Connection:
    """A transaction whose first write is an event row, left open."""
    conn = psycopg.connect(ledger_url)
    conn.execute(
        "INSERT INTO order_events (trade_no, source, from_state, to_state) "
        "VALUES (%s, 'lookup', 'QUEUED', 'PROCESSING')",
        (trade_no,),
    )
    return conn


def test_the_feed_never_passes_an_event_committed_late(
    ledger: Ledger, feed: Feed, ledger_url: str
) -> None:
    slow, fast = new_order(ledger), new_order(ledger)
    start = last_id(ledger.pool)
    open_tx = _open_event(ledger_url, slow)  # draws the lower id, commits last
    try:
        walk(ledger, fast, State.SUBMITTING, State.PROCESSING)  # committed at once
        page = feed.read(start, 100, wait=0.3)
        # The committed event is not returned: returning it would move the reader's
        # cursor past the one still open, which it would then never see.
        assert page.events == []
        assert page.cursor == start
    finally:
        open_tx.commit()
        open_tx.close()
    page = feed.read(start, 100, wait=5.0)
    assert [(e.trade_no, e.type) for e in page.events] == [
        (slow, "payout.processing"),
        (fast, "payout.processing"),
    ]
    assert page.events[0].cursor < page.events[1].cursor == page.cursor


def test_the_feed_waits_for_the_newest_transaction_too(
    ledger: Ledger, feed: Feed, ledger_url: str
) -> None:
    """The open transaction is younger than every one that ended (so no snapshot lists
    it as running), and drew its event id before an older one drew and committed its."""
    slow, fast = new_order(ledger), new_order(ledger)
    start = last_id(ledger.pool)
    older = psycopg.connect(ledger_url)
    older.execute("SELECT pg_current_xact_id()")  # the older transaction id
    younger = _open_event(ledger_url, slow)
    try:
        older.execute(
            "INSERT INTO order_events (trade_no, source, from_state, to_state) "
            "VALUES (%s, 'lookup', 'QUEUED', 'PROCESSING')",
            (fast,),
        )
        older.commit()
        assert feed.read(start, 100, wait=0.3).events == []
    finally:
        older.close()
        younger.commit()
        younger.close()
    assert [e.trade_no for e in feed.read(start, 100, wait=5.0).events] == [slow, fast]


def test_the_feed_passes_an_event_rolled_back(ledger: Ledger, feed: Feed, ledger_url: str) -> None:
    gone, kept = new_order(ledger), new_order(ledger)
    start = last_id(ledger.pool)
    open_tx = _open_event(ledger_url, gone)
    walk(ledger, kept, State.SUBMITTING, State.PROCESSING)
    open_tx.rollback()
    open_tx.close()
    page = feed.read(start, 100, wait=5.0)
    assert [e.trade_no for e in page.events] == [kept]


def test_every_event_committed_before_a_read_is_in_it(ledger: Ledger, ledger_url: str) -> None:
    """Writers in threads, a reader following them: each event once, in id order."""
    feed = Feed(ledger.pool)
    orders = [new_order(ledger) for _ in range(20)]
    start = last_id(ledger.pool)

    def work(trade_no: str) -> None:
        walk(ledger, trade_no, State.SUBMITTING, State.PROCESSING, State.SUCCEEDED)

    threads = [threading.Thread(target=work, args=(t,)) for t in orders]
    for thread in threads:
        thread.start()
    seen: list[int] = []
    cursor = start
    while any(thread.is_alive() for thread in threads) or len(seen) < 40:
        page = feed.read(cursor, 7, wait=1.0)
        seen += [e.cursor for e in page.events]
        cursor = page.cursor
        if not page.events and not any(thread.is_alive() for thread in threads):
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 40


def test_follow_yields_what_is_there_then_what_comes(ledger: Ledger, feed: Feed) -> None:
    start = last_id(ledger.pool)
    first = new_order(ledger)
    events = feed.follow(start, poll=0.05)
    assert next(events).trade_no == first
    later = new_order(ledger)
    event = next(events)
    assert (event.trade_no, event.type) == (later, "payout.queued")


# signatures --------------------------------------------------------------------------
BODY = b'{"id":"evt_1","type":"payout.succeeded","created":1764600000,"data":{}}'


def test_a_signature_verifies_and_a_changed_body_or_secret_does_not() -> None:
    header = signature_header(BODY, SECRET, 1764600000)
    assert header.startswith("t=1764600000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_webhook(BODY, header, SECRET, now=1764600000)
    assert verify_webhook(BODY.decode(), header, SECRET, now=1764600000)
    assert not verify_webhook(BODY.replace(b"succeeded", b"failed"), header, SECRET, now=1764600000)
    assert not verify_webhook(BODY + b" ", header, SECRET, now=1764600000)
    assert not verify_webhook(BODY, header, SECRET + "x", now=1764600000)
    assert not verify_webhook(BODY, header, "", now=1764600000)


def test_a_signature_is_good_only_within_the_tolerance() -> None:
    header = signature_header(BODY, SECRET, 1764600000)
    assert verify_webhook(BODY, header, SECRET, now=1764600000 + 300)
    assert not verify_webhook(BODY, header, SECRET, now=1764600000 + 301)
    assert not verify_webhook(BODY, header, SECRET, now=1764600000 - 301)  # from the future
    assert verify_webhook(BODY, header, SECRET, tolerance=1000, now=1764600000 + 900)
    # The timestamp is signed: moving it forward breaks the signature.
    moved = header.replace("t=1764600000", "t=1764600900")
    assert not verify_webhook(BODY, moved, SECRET, now=1764600900)


@pytest.mark.parametrize(
    "header",
    [None, "", "v1=abc", "t=1764600000", "t=x,v1=abc", "garbage", "t=,v1="],
)
def test_a_malformed_header_is_refused(header: str | None) -> None:
    assert not verify_webhook(BODY, header, SECRET, now=1764600000)


def test_any_of_several_signatures_passes_while_a_secret_is_rotated() -> None:
    new = signature_header(BODY, "new-secret", 1764600000)
    old = signature_header(BODY, SECRET, 1764600000).split(",")[1]
    assert verify_webhook(BODY, f"{new},{old}", SECRET, now=1764600000)
    assert verify_webhook(BODY, f"{new},{old}", "new-secret", now=1764600000)


# settings ------------------------------------------------------------------------------
def test_the_webhook_settings() -> None:
    settings = load_settings(
        {"APP_WEBHOOK_URL": "https://app.example/hooks/", "APP_WEBHOOK_SECRET": SECRET}
    )
    assert settings.app_webhook_url == "https://app.example/hooks/"  # the path is the app's
    assert SECRET not in repr(settings)
    assert load_settings({}).app_webhook_url is None
    with pytest.raises(ConfigError, match="APP_WEBHOOK_SECRET must be set"):
        load_settings({"APP_WEBHOOK_URL": "https://app.example/hooks"})
    with pytest.raises(ConfigError, match="APP_WEBHOOK_URL is not an http") as error:
        load_settings({"APP_WEBHOOK_URL": "ftp://user:pw@app", "APP_WEBHOOK_SECRET": SECRET})
    assert "pw" not in str(error.value)


# the command ---------------------------------------------------------------------------
def disburse(*argv: str) -> Any:
    from click.testing import CliRunner

    from worker import cli

    return CliRunner().invoke(cli.main, list(argv))


def test_disburse_events_lists_a_batch_s_events_and_their_deliveries(
    ledger: Ledger, deliveries: Deliveries, broker: Any
) -> None:
    refused = new_order(ledger)
    walk(ledger, refused, State.SUBMITTING, State.PROCESSING)
    order = ledger.get(refused)
    assert order is not None
    new_order(ledger)  # another batch's

    def answer(event: dict[str, Any]) -> int:
        return 500 if event["data"]["trade_no"] == refused else 200

    with AppReceiver(SECRET, answer=answer) as app:
        sender(deliveries, app.url).run(budget=2)

    listed = disburse("events", "--batch", order.batch_id)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 2 and all(refused in line and order.batch_id in line for line in lines)
    assert "payout.queued" in lines[0] and "[pending, 1 attempt, last HTTP 500, next " in lines[0]
    # Taken, and waiting for the payout's earlier event.
    assert "payout.processing" in lines[1] and lines[1].endswith("[pending, 0 attempts]")
    assert ACCOUNT not in listed.output and NAME not in listed.output

    as_json = [
        json.loads(line)
        for line in disburse("events", "--json", "--batch", order.batch_id).output.splitlines()
    ]
    assert [e["type"] for e in as_json] == ["payout.queued", "payout.processing"]
    assert as_json[0]["delivery"]["last_status"] == 500
    assert as_json[1]["delivery"]["attempts"] == 0

    # --since takes a duration, as `batches --since 1h` does.
    recent = disburse("events", "--since", "1h", "--batch", order.batch_id)
    assert (recent.exit_code, recent.output) == (0, listed.output)
    assert disburse("events", "--since", "0s").output == ""

    failing = disburse("events", "--failed-deliveries")
    assert failing.exit_code == 0
    assert [line.split()[0] for line in failing.output.splitlines()] == [as_json[0]["id"]]


def test_disburse_events_redeliver(ledger: Ledger, deliveries: Deliveries, broker: Any) -> None:
    trade_no = new_order(ledger)
    with AppReceiver(SECRET) as app:
        sender(deliveries, app.url).run(budget=2)
        (event,) = app.acked
        again = disburse("events", "redeliver", event["id"])
        assert again.exit_code == 0, again.output
        assert "1 event to be sent again" in again.output
        # The shell may lack what the workers have: it says so, not that nothing is sent.
        assert "APP_WEBHOOK_URL is not set in this shell: the workers send them" in again.output
        sender(deliveries, app.url).run(budget=2)
        assert app.acked == [event, event]

        since = disburse("events", "redeliver", "--since", str(event["created"] - 1))
        assert (since.exit_code, since.output.splitlines()[0]) == (0, "1 event to be sent again")
    assert app.states() == {trade_no: ["QUEUED"]}
    audited = [e for e in ledger.audit_events() if e.action == "redeliver"][-2:]
    assert [e.facts["events"] for e in audited if e.facts] == [
        event["id"],
        audited[1].facts["events"],
    ]
    assert audited[1].facts is not None and audited[1].facts["events"].startswith("since ")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["events", "redeliver", "evt_999999999"], "no event evt_999999999; nothing sent"),
        (["events", "redeliver", "evt_x"], "is not an event id"),
        (["events", "redeliver"], "name the events to send again, or give --since"),
        (["events", "redeliver", "evt_1", "--since", "0"], "not both"),
        (["events", "--since", "yesterday"], "is not a duration such as 30m"),
        (["events", "--batch", "bnosuchbatch"], "no batch bnosuchbatch"),
    ],
)
def test_disburse_events_mistakes_are_one_line_and_exit_1(
    broker: Any, argv: list[str], said: str
) -> None:
    result = disburse(*argv)
    assert result.exit_code == 1 and said in result.output
    assert "Traceback" not in result.output


def test_beat_sends_a_run_every_second_only_when_there_is_an_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import celeryconfig
    from worker.celery import runtime
    from worker.core.queues import OUTBOX_QUEUE, OUTBOX_TASK

    monkeypatch.delenv("APP_WEBHOOK_URL", raising=False)
    runtime.reset()
    assert "outbox" not in celeryconfig.beat_schedule
    monkeypatch.setenv("APP_WEBHOOK_URL", "https://app.example/hooks")
    monkeypatch.setenv("APP_WEBHOOK_SECRET", SECRET)
    runtime.reset()
    try:
        entry = celeryconfig.beat_schedule["outbox"]
        assert (entry["task"], entry["schedule"]) == (OUTBOX_TASK, 1.0)
        assert celeryconfig.task_routes[OUTBOX_TASK] == {"queue": OUTBOX_QUEUE}
        assert SECRET not in repr(vars(celeryconfig))
    finally:
        monkeypatch.undo()
        runtime.reset()


def test_a_retry_s_events_name_the_payout_it_retries(ledger: Ledger, feed: Feed) -> None:
    failed = new_order(ledger)
    walk(ledger, failed, State.SUBMITTING, State.FAILED)
    start = last_id(ledger.pool)
    fields = {"amount": "1000", "bankAccountNo": ACCOUNT, "bankCode": "0002"}
    payout = Payout("ID", "IDR", Decimal("1000"), None, fields)
    ((again, _),) = ledger.create_orders(
        [payout], batch_id=new_batch_id(), market="ID", retry_of=[failed]
    )
    (event,) = feed.read(start, 100, wait=5.0).events
    assert (event.trade_no, event.type, event.to_dict()["data"]["retry_of"]) == (
        again,
        "payout.queued",
        failed,
    )
