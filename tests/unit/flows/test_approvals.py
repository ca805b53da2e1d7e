"""Who may release how much (worker.flows.approvals), through the producer, on the test
ledger: bands by total and by one payout, four eyes, the daily limit across batches and
the day turning in the market's zone, the beneficiary limit, schedules released by the
beat, cancels, the balance check, and an audit row for every action."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from worker.core.exceptions import ApprovalRefused, BatchNotFound, InvalidPayout, NotSent
from worker.core.policy_file import parse_policy
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.credentials import sandbox_settings
from worker.flows.approvals import Approvals
from worker.flows.producer import Producer
from worker.flows.results import BatchResult
from worker.ledger import Ledger
from worker.provider.answers import Balance
from worker.provider.vexora import VexoraClient

POLICY = parse_policy(
    b"""
[markets.ID]
max_payout = "50000000"
daily_limit = "60000000"
beneficiary_daily_limit = "30000000"
approvals = [
  { total_over = "0", approvals = 1 },
  { total_over = "40000000", payout_over = "20000000", approvals = 2 },
]
""",
    "policy.toml",
)


@dataclass
class Provider:
    balances: dict[str, Decimal] = field(default_factory=lambda: {"ID": Decimal(10**12)})
    asked: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    down: bool = False

    def balance(self, market: str) -> Balance:
        self.asked.append(market)
        if self.down:
            raise NotSent("connection refused")
        return Balance(self.balances[market], Decimal(0), Decimal(0))

    def publish(self, trade_nos: Sequence[str]) -> None:
        self.published.extend(trade_nos)


@dataclass
class Clock:
    at: datetime | None = None  # None: the ledger's own clock

    def __call__(self) -> datetime:
        return self.at or datetime.now(UTC)


@dataclass
class Fx:
    ledger: Ledger
    provider: Provider
    clock: Clock
    approvals: Approvals
    producer: Producer

    def enqueue(self, *amounts: int, who: str = "carol", **kwargs: Any) -> BatchResult:
        start = _next_start()
        rows = sample_rows("ID", len(amounts), start=start)
        for i, (row, amount) in enumerate(zip(rows, amounts, strict=True)):
            row["amount"] = str(amount)
            row["bankAccountNo"] = f"{start + i:013d}"  # a beneficiary of its own
        return self.producer.enqueue_batch("ID", list(enumerate(rows, 1)), operator=who, **kwargs)

    def counts(self, batch_id: str | None) -> dict[State, int]:
        assert batch_id is not None
        summary = self.ledger.batch(batch_id)
        assert summary is not None
        return summary.counts

    def actions(self, batch_id: str | None) -> list[tuple[str, str]]:
        return [(e.who, e.action) for e in self.ledger.audit_events(batch_id=batch_id)]


_STARTS = iter(range(0, 10**6, 1000))


def _next_start() -> int:
    """Sample rows of other references and beneficiaries for every batch."""
    return next(_STARTS)


@pytest.fixture
def fx(ledger: Ledger) -> Fx:
    provider, clock = Provider(), Clock()
    approvals = Approvals(
        ledger, provider.balance, provider.publish, policy=POLICY, operator="op", now=clock
    )
    settings = sandbox_settings(env={"NOTIFY_URL": "https://merchant.example/notify"})
    producer = Producer(
        ledger,
        settings,
        publish=provider.publish,
        sign=lambda market: VexoraClient.from_settings(settings, market).signed_body,
        approvals=approvals,
    )
    return Fx(ledger, provider, clock, approvals, producer)


# --- bands ---------------------------------------------------------------------------


def test_a_batch_meeting_a_band_waits_held_saying_what_for(fx: Fx) -> None:
    small = fx.enqueue(100_000, 200_000)
    assert small.held and small.held_reason == "needs 1 approval, none given yet"
    assert fx.counts(small.batch_id) == {State.HELD: 2}
    assert fx.provider.published == []
    by_total = fx.enqueue(15_000_000, 15_000_000, 15_000_000)  # 45,000,000 > 40,000,000
    by_payout = fx.enqueue(25_000_000)  # one payout over 20,000,000
    for result in (by_total, by_payout):
        assert result.held_reason == "needs 2 approvals, none given yet"
    hold = fx.ledger.hold(by_payout.batch_id or "")
    assert hold is not None and (hold.created_by, hold.approvals_needed) == ("carol", 2)


def test_two_people_release_a_two_approval_batch_and_the_creator_cannot(fx: Fx) -> None:
    result = fx.enqueue(25_000_000)
    batch_id = result.batch_id or ""
    with pytest.raises(ApprovalRefused, match=r"carol created batch .*another person"):
        fx.approvals.approve(batch_id, operator="carol")
    first = fx.approvals.approve(batch_id, operator="alice")
    assert (first.moved, first.approvals, first.approvals_remaining) == (0, ("alice",), 1)
    assert first.held == "needs 2 approvals, 1 given by alice"
    with pytest.raises(ApprovalRefused, match=r"alice approved batch .* already"):
        fx.approvals.approve(batch_id, operator="alice")
    assert fx.provider.published == []  # nothing sent before its approvals
    second = fx.approvals.approve(batch_id, operator="bob")
    assert (second.moved, second.held, second.approvals_remaining) == (1, None, 0)
    assert fx.counts(batch_id) == {State.QUEUED: 1}
    assert fx.provider.published == result.trade_nos
    assert fx.actions(batch_id) == [
        ("carol", "enqueue"),
        ("alice", "approve"),
        ("bob", "approve"),
    ]


def test_a_row_over_max_payout_is_a_row_error(fx: Fx) -> None:
    result = fx.enqueue(1_000_000, 50_000_001)
    assert result.batch_id is None
    assert [(e.row, e.errors) for e in result.rejected] == [
        (2, {"amount": ["over the policy's max_payout of 50,000,000 IDR"]})
    ]
    with pytest.raises(InvalidPayout, match="max_payout"):
        fx.producer.enqueue("ID", {**sample_rows("ID", 1, start=900)[0], "amount": "60000000"})


# --- the daily limit ----------------------------------------------------------------------


def approved(fx: Fx, result: BatchResult) -> str:
    batch_id = result.batch_id or ""
    fx.approvals.approve(batch_id, operator="alice")
    return batch_id


def test_the_daily_limit_holds_the_batch_that_would_pass_it(fx: Fx) -> None:
    first = approved(fx, fx.enqueue(10_000_000, 10_000_000, 10_000_000))  # 30,000,000
    assert fx.counts(first) == {State.QUEUED: 3}
    second = fx.enqueue(15_000_000, 15_000_000, 5_000_000)  # 35,000,000: 65 > 60
    result = fx.approvals.approve(second.batch_id or "", operator="alice")
    assert result.moved == 0
    assert result.held == (
        "daily limit: 30,000,000 of 60,000,000 IDR released today, this batch 35,000,000"
    )
    assert fx.counts(second.batch_id) == {State.HELD: 3}
    # The beat tries again, and the day has not turned: still held.
    assert fx.approvals.release_due() == 0
    # The day turns in Jakarta (UTC+7) at 17:00 UTC: the beat releases it then.
    fx.clock.at = datetime.now(UTC) + timedelta(days=1)
    assert fx.approvals.release_due() == 3
    assert fx.counts(second.batch_id) == {State.QUEUED: 3}


def test_an_approver_lets_a_batch_past_the_daily_limit_with_a_note(fx: Fx) -> None:
    approved(fx, fx.enqueue(10_000_000, 10_000_000, 10_000_000))
    second = fx.enqueue(15_000_000, 15_000_000, 5_000_000)
    batch_id = approved(fx, second)
    with pytest.raises(ApprovalRefused, match="needs a note"):
        fx.approvals.approve(batch_id, operator="bob", override_limit=True)
    result = fx.approvals.approve(
        batch_id, operator="bob", override_limit=True, note="month end, agreed with finance"
    )
    assert result.moved == 3
    events = fx.ledger.audit_events(batch_id=batch_id)
    assert [(e.who, e.action, e.note) for e in events][-2] == (
        "bob",
        "override_limit",
        "month end, agreed with finance",
    )


def test_a_beneficiary_over_its_daily_limit_is_a_row_error_naming_the_rows(fx: Fx) -> None:
    start = _next_start()
    rows = sample_rows("ID", 3, start=start)
    for i, row in enumerate(rows):
        row["bankAccountNo"] = f"{start + i:013d}"
    for row, amount in zip(rows, ("20000000", "1000000", "15000000"), strict=True):
        row["amount"] = amount
    rows[2]["bankAccountNo"] = rows[0]["bankAccountNo"]  # 35,000,000 to one account
    result = fx.producer.enqueue_batch("ID", list(enumerate(rows, 1)), operator="carol")
    assert result.batch_id is None
    assert [e.row for e in result.rejected] == [1, 3]
    assert "beneficiary daily limit" in result.rejected[0].errors["amount"][0]
    skipped = fx.producer.enqueue_batch(
        "ID", list(enumerate(rows, 1)), operator="carol", skip_invalid=True
    )
    assert skipped.accepted == 1 and [e.row for e in skipped.rejected] == [1, 3]


# --- schedules ----------------------------------------------------------------------


def test_a_scheduled_batch_is_released_by_the_beat_once_approved_and_due(fx: Fx) -> None:
    at = datetime.now(UTC) + timedelta(hours=2)
    result = fx.enqueue(100_000, not_before=at)
    batch_id = result.batch_id or ""
    assert result.held_reason == (
        f"needs 1 approval, none given yet; scheduled for {at.isoformat()}"
    )
    assert fx.approvals.release_due() == 0  # approvals missing: not even looked at
    held = fx.approvals.approve(batch_id, operator="alice")
    assert held.moved == 0 and held.held == f"scheduled for {at.isoformat()}"
    assert fx.approvals.release_due() == 0
    fx.clock.at = at + timedelta(seconds=1)
    assert fx.approvals.release_due() == 1
    assert fx.counts(batch_id) == {State.QUEUED: 1}
    assert fx.provider.asked == ["ID"]  # the balance check, once it was due


def test_a_scheduled_batch_can_be_cancelled_until_then(fx: Fx, ledger: Ledger) -> None:
    import fakeredis

    from worker.coordination.pause import PauseSwitch
    from worker.flows.controls import Controls

    result = fx.enqueue(100_000, not_before=datetime.now(UTC) + timedelta(hours=2))
    batch_id = result.batch_id or ""
    controls = Controls(
        ledger, fx.provider.publish, PauseSwitch(fakeredis.FakeRedis(), "t"), operator="dave"
    )
    assert controls.cancel(batch_id).moved == 1
    fx.clock.at = datetime.now(UTC) + timedelta(hours=3)
    assert fx.approvals.release_due() == 0
    assert fx.counts(batch_id) == {State.CANCELLED: 1}
    assert fx.actions(batch_id) == [("carol", "enqueue"), ("dave", "cancel")]


# --- the balance check (approve's, from before the policy) -----------------------------


def test_a_short_balance_keeps_an_approved_batch_held_until_the_beat_finds_it_covered(
    fx: Fx,
) -> None:
    fx.provider.balances["ID"] = Decimal(100)
    batch_id = fx.enqueue(100_000).batch_id or ""
    result = fx.approvals.approve(batch_id, operator="alice")
    assert result.held == "balance 100 IDR does not cover the batch total 100000"
    summary = fx.ledger.batch(batch_id)
    assert summary is not None and summary.held_reason == result.held
    fx.provider.balances["ID"] = Decimal(10**9)
    assert fx.approvals.release_due() == 1


def test_a_balance_that_cannot_be_read_keeps_the_batch_held(fx: Fx) -> None:
    fx.provider.down = True
    batch_id = fx.enqueue(100_000).batch_id or ""
    result = fx.approvals.approve(batch_id, operator="alice")
    assert result.held is not None and "could not read the provider balance" in result.held
    assert fx.approvals.approve(batch_id, operator="alice", check_balance=False).moved == 1


def test_approving_nothing_held_or_no_batch(fx: Fx) -> None:
    batch_id = approved(fx, fx.enqueue(100_000))
    assert fx.approvals.approve(batch_id, operator="bob").message == "nothing is held in this batch"
    with pytest.raises(BatchNotFound):
        fx.approvals.approve("nope", operator="bob")


def test_approvals_require_login_refuses_a_name_typed_on_a_command_line(fx: Fx) -> None:
    batch_id = fx.enqueue(100_000).batch_id or ""
    fx.approvals.require_login = True
    with pytest.raises(ApprovalRefused, match="APPROVALS_REQUIRE_LOGIN"):
        fx.approvals.approve(batch_id, operator="alice")
    assert fx.approvals.approve(batch_id, operator="alice", authenticated=True).moved == 1


# --- the feed and the audit trail --------------------------------------------------------


def test_the_feed_carries_batch_held_approved_and_released(fx: Fx) -> None:
    from worker.outbox import Feed

    result = fx.enqueue(25_000_000)
    batch_id = result.batch_id or ""
    fx.approvals.approve(batch_id, operator="alice")
    fx.approvals.approve(batch_id, operator="bob")
    events = Feed(fx.ledger.pool).read(0, 100, batch_id=batch_id).events
    batch_events = [e.to_dict() for e in events if e.type.startswith("batch.")]
    assert [(b["type"], b["data"].get("by") or b["data"].get("reason")) for b in batch_events] == [
        ("batch.held", "needs 2 approvals, none given yet"),
        ("batch.approved", "alice"),
        ("batch.held", "needs 2 approvals, 1 given by alice"),
        ("batch.approved", "bob"),
        ("batch.released", None),
    ]
    assert batch_events[-1]["data"]["payouts"] == 1
    first = batch_events[0]
    assert set(first) == {"id", "type", "created", "data"}
    assert first["data"]["batch_id"] == batch_id
    assert first["data"]["reason"] == "needs 2 approvals, none given yet"
    payouts = [e.type for e in events if e.type.startswith("payout.")]
    assert payouts == ["payout.held", "payout.queued"]


def test_the_policy_in_force_is_recorded_once_per_digest(fx: Fx) -> None:
    fx.approvals.policy = replace(POLICY, digest=uuid.uuid4().hex)
    before = fx.ledger.audit_events()
    mark = before[-1].id if before else 0
    fx.approvals.record_policy()
    fx.approvals.record_policy()
    (row,) = fx.ledger.audit_events(after=mark)
    assert (row.action, row.who, row.note) == ("policy_loaded", "op", "policy.toml")
    assert row.facts == {"digest": fx.approvals.policy.digest, "markets": ["ID"]}


def test_a_retry_is_in_the_audit_trail_even_when_nothing_is_retried(fx: Fx) -> None:
    batch_id = approved(fx, fx.enqueue(100_000))
    result = fx.producer.retry(batch_id, operator="erin")
    assert result.batch_id is None
    (*_, retry) = fx.ledger.audit_events(batch_id=batch_id)
    assert (retry.who, retry.action, retry.facts) == (
        "erin",
        "retry",
        {"retry_batch": None, "not_retried": 0},
    )


def test_without_a_policy_a_held_batch_is_released_by_anyone_as_before(fx: Fx) -> None:
    fx.approvals.policy = None
    fx.producer.approvals = fx.approvals
    result = fx.enqueue(100_000, hold=True)
    assert result.held_reason == "needs 1 approval, none given yet"
    released = fx.approvals.approve(result.batch_id or "", operator="carol")  # its creator
    assert released.moved == 1


def test_a_release_interrupted_after_its_mark_is_completed_by_the_beat(fx: Fx) -> None:
    batch_id = fx.enqueue(100_000).batch_id or ""
    fx.ledger.add_approval(batch_id, "alice")
    # The release was marked (the daily limit counts it), then the process died.
    assert fx.ledger.claim_release(batch_id, POLICY.of("ID"), datetime.now(UTC)) is None
    assert fx.counts(batch_id) == {State.HELD: 1}
    fx.provider.down = True  # a marked release asks the balance no more
    assert fx.approvals.release_due() == 1
    assert fx.counts(batch_id) == {State.QUEUED: 1}


def test_a_retry_is_a_batch_under_the_policy_too(fx: Fx, ledger: Ledger) -> None:
    from tests.unit.conftest import failed_through_both_apis

    batch_id = approved(fx, fx.enqueue(25_000_000))
    fx.approvals.approve(batch_id, operator="bob")
    (trade_no,) = [t for page in ledger.iter_batch(batch_id) for t in page]
    assert ledger.claim(trade_no)[0].moved
    ledger.transition(trade_no, State.FAILED, source="submit")
    fx.producer.ask = failed_through_both_apis
    retry = fx.producer.retry(batch_id, operator="erin")
    assert retry.batch_id is not None and retry.held
    hold = ledger.hold(retry.batch_id)
    assert hold is not None and (hold.created_by, hold.approvals_needed) == ("erin", 2)
