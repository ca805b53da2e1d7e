"""FAILED and REVERSED orders keep their fields for FAILED_PAYLOAD_RETENTION, then the
reconcile pass erases them (worker.flows.retention): on the test ledger, searching every text
and jsonb column of the database for the personal numbers afterwards."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import psycopg
import pytest
import redis
from psycopg.types.json import Jsonb

from schemas import Payout
from tests import ledger_reads
from tests.unit import ledger_sql
from tests.unit.ledger.test_ledger import sample_payouts
from tests.unit.ledger_sql import PERSONAL_NUMBERS, numbers_in_the_database
from tests.unit.pending_orders import make_world
from worker.core.config import load_settings
from worker.core.exceptions import ConfigError
from worker.core.states import Outcome, State
from worker.flows import retention
from worker.ledger import Debit, Ledger
from worker.provider.report import ProviderReport

HOUR = 3600.0  # the retention window of these tests


def failed_orders(ledger: Ledger, batch: list[Payout]) -> list[str]:
    """The payouts enqueued, sent and FAILED (the provider's final refusal)."""
    created = [t for t, _ in ledger.create_orders(batch, batch_id="b1", market="ID")]
    for trade_no in created:
        assert ledger.claim(trade_no)[0].moved
        assert ledger.transition(trade_no, State.FAILED, source="submit", report=True).moved
    return created


def kept(ledger: Ledger) -> int:
    with ledger.pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM orders WHERE payload IS NOT NULL").fetchone()
    assert row is not None
    return int(row[0])


def test_after_the_window_the_database_holds_none_of_the_fields(
    ledger: Ledger, ledger_url: str
) -> None:
    batch = sample_payouts(5)
    numbers = {p.fields[n] for p in batch for n in PERSONAL_NUMBERS if n in p.fields}
    assert len(numbers) >= 30
    trade_nos = failed_orders(ledger, batch)
    # Within the window: every FAILED order keeps its fields, for a retry.
    assert retention.erase_expired(ledger, HOUR) == 0
    assert numbers_in_the_database(ledger_url, numbers) == sorted(numbers)
    for trade_no in trade_nos[:5]:
        ledger_sql.backdate(ledger, trade_no, 2 * HOUR)
    assert retention.erase_expired(ledger, HOUR) == 5  # only those past it
    assert kept(ledger) == len(trade_nos) - 5
    for trade_no in trade_nos[5:]:
        ledger_sql.backdate(ledger, trade_no, 2 * HOUR)
    assert retention.erase_expired(ledger, HOUR) == len(trade_nos) - 5
    assert kept(ledger) == 0
    assert numbers_in_the_database(ledger_url, numbers) == []
    order = ledger.get(trade_nos[0])  # what people read stays: the masked copy
    assert order is not None and order.state is State.FAILED and order.masked


def test_erasure_goes_a_page_at_a_time_until_done(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed_orders(ledger, sample_payouts(2))  # 8 orders
    pages: list[int] = []
    erase = ledger.erase_kept_payloads

    def counted(older_than: float, *, limit: int) -> int:
        pages.append(erase(older_than, limit=limit))
        return pages[-1]

    monkeypatch.setattr(retention, "PAGE", 3)
    monkeypatch.setattr(ledger, "erase_kept_payloads", counted)
    assert retention.erase_expired(ledger, 0) == 8
    assert pages == [3, 3, 2] and kept(ledger) == 0


def test_a_backlog_is_worked_off_over_several_passes(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed_orders(ledger, sample_payouts(2))  # 8 orders
    monkeypatch.setattr(retention, "PAGE", 2)
    monkeypatch.setattr(retention, "RETENTION_PAGES_PER_PASS", 3)
    assert retention.erase_expired(ledger, 0) == 6 and kept(ledger) == 2
    assert retention.erase_expired(ledger, 0) == 2 and kept(ledger) == 0


def test_the_reconcile_pass_erases_what_is_past_the_window(
    fake_redis: redis.Redis, ledger: Ledger
) -> None:
    world = make_world(fake_redis, ledger, failed_payload_retention=HOUR)
    trade_nos = failed_orders(world.ledger, sample_payouts(1))
    assert world.next_pass().ran and kept(ledger) == 4
    for trade_no in trade_nos:
        ledger_sql.backdate(ledger, trade_no, 2 * HOUR)
    assert world.next_pass().ran and kept(ledger) == 0


@pytest.mark.parametrize(
    ("state", "allowed"),
    [("FAILED", True), ("REVERSED", True), ("SUCCEEDED", False), ("CANCELLED", False)],
)
def test_the_schema_lets_only_failed_and_reversed_orders_keep_fields(
    ledger: Ledger, state: str, allowed: bool
) -> None:
    (trade_no,) = failed_orders(ledger, sample_payouts(1)[:1])
    with ledger.pool.connection() as conn:
        update = "UPDATE orders SET state = %s, payload = %s WHERE trade_no = %s"
        if allowed:
            conn.execute(update, (state, Jsonb({"bankAccountNo": "1"}), trade_no))
        else:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(update, (state, Jsonb({"bankAccountNo": "1"}), trade_no))


def test_paid_and_cancelled_orders_erase_their_fields_at_once_failed_keep_them(
    ledger: Ledger,
) -> None:
    batch = sample_payouts(1)
    created = [t for t, _ in ledger.create_orders(batch, batch_id="b1", market="ID")]
    paid, cancelled, failed, _ = created
    assert ledger.claim(paid)[0].moved and ledger.claim(failed)[0].moved
    ledger.transition(paid, State.SUCCEEDED, source="submit")
    ledger.transition(cancelled, State.CANCELLED, source="operator")
    ledger.transition(failed, State.FAILED, source="submit")
    for trade_no, erased in ((paid, True), (cancelled, True), (failed, False)):
        try:
            ledger_reads.payload(ledger, trade_no)
            found = True
        except KeyError:
            found = False
        assert found is not erased, trade_no


@pytest.mark.parametrize("source", ["submit", "webhook", "lookup"])
def test_a_paid_order_keeps_no_fields_from_the_moment_it_succeeds(
    ledger: Ledger, ledger_url: str, source: Literal["submit", "webhook", "lookup"]
) -> None:
    """With the default settings (a week's window for FAILED orders), a payout's personal
    numbers go in the update that makes it SUCCEEDED, whoever reports it; a reversal
    finds none to keep."""
    window = load_settings({}).failed_payload_retention
    assert window == 7 * 86400.0
    batch = sample_payouts(1)  # one payout per market
    numbers = {p.fields[n] for p in batch for n in PERSONAL_NUMBERS if n in p.fields}
    created = [t for t, _ in ledger.create_orders(batch, batch_id="b1", market="ID")]
    paid = ProviderReport(State.SUCCEEDED, "p-1", "0000", "")
    for trade_no in created:
        assert ledger.claim(trade_no)[0].moved
        assert ledger.apply_report(trade_no, paid, source=source) is Outcome.MOVED
        with pytest.raises(KeyError):
            ledger_reads.payload(ledger, trade_no)
    assert kept(ledger) == 0 and numbers_in_the_database(ledger_url, numbers) == []
    bounced = ProviderReport(State.FAILED, "p-1", "failed", "")
    cost = Debit(Decimal("2000.00"), "IDR", Decimal("102000.00"), "IDR")
    assert ledger.apply_report(created[0], bounced, source="lookup", debit=cost) is Outcome.MOVED
    order = ledger.get(created[0])
    assert order is not None and order.state is State.REVERSED and order.masked
    assert retention.erase_expired(ledger, window) == 0 and kept(ledger) == 0


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, 7 * 86400.0), ("", 7 * 86400.0), ("3600", 3600.0), ("7d", 604800.0),
     ("12h", 43200.0), ("30m", 1800.0), ("90s", 90.0), ("0", 0.0), ("1.5d", 129600.0)],
)  # fmt: skip
def test_the_retention_setting(raw: str | None, seconds: float) -> None:
    env = {} if raw is None else {"FAILED_PAYLOAD_RETENTION": raw}
    assert load_settings(env).failed_payload_retention == seconds


@pytest.mark.parametrize("raw", ["a week", "-1", "7 days", "1e3", "7w"])
def test_a_bad_retention_setting_is_named(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^FAILED_PAYLOAD_RETENTION=.* is not a duration"):
        load_settings({"FAILED_PAYLOAD_RETENTION": raw})
