"""Operator controls (worker.flows.controls) on the test ledger and fakeredis: approve, cancel,
pause and resume, as the public API and the ``disburse`` commands reach them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import fakeredis
import pytest
import redis

import worker
from schemas import Payout
from tests import ledger_reads
from worker import cli
from worker.celery import runtime
from worker.coordination.pause import PauseSwitch
from worker.coordination.pause_store import PauseStore
from worker.core.exceptions import NotSent
from worker.core.states import State
from worker.flows.approvals import Approvals
from worker.flows.controls import BatchNotFound, Controls
from worker.ledger import Ledger
from worker.provider.answers import Balance

FIELDS = {"amount": "500", "accountNo": "880123456789012345"}


@dataclass
class Provider:
    """The balance of each market's account, and the submissions published."""

    balances: dict[str, Decimal] = field(default_factory=dict)
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
class Fixture:
    ledger: Ledger
    redis: redis.Redis
    provider: Provider
    controls: Controls


@pytest.fixture
def fx(ledger: Ledger) -> Fixture:
    client = fakeredis.FakeRedis(decode_responses=True)
    provider = Provider({"AR": Decimal(10**9)})
    switch = PauseSwitch(client, "t", store=PauseStore(ledger.pool))
    controls = Controls(ledger, provider.publish, switch, operator="tester")
    return Fixture(ledger, client, provider, controls)


def queued_orders(ledger: Ledger) -> list[str]:
    return [t for t, _ in ledger.scan(State.QUEUED, older_than=0, now_ms=ledger.now_ms())]


def batch(ledger: Ledger, market: str, n: int, *, hold: bool = True) -> str:
    payouts = [Payout(market, "ARS", Decimal(500), None, FIELDS) for _ in range(n)]
    ledger.create_orders(payouts, batch_id="b-" + market, market=market, hold=hold)
    return "b-" + market


def counts(ledger: Ledger, batch_id: str) -> dict[State, int]:
    summary = ledger.batch(batch_id)
    assert summary is not None
    return summary.counts


# --- approve and cancel ----------------------------------------------------------------


def test_cancel_moves_only_what_is_unsent(fx: Fixture) -> None:
    batch_id = batch(fx.ledger, "AR", 3, hold=False)
    queued_before = queued_orders(fx.ledger)
    sent = queued_before[0]
    assert fx.ledger.claim(sent)[0].moved
    result = fx.controls.cancel(batch_id)
    assert (result.moved, result.held) == (2, None)
    assert counts(fx.ledger, batch_id) == {State.CANCELLED: 2, State.SUBMITTING: 1}
    (cancelled, *_) = [t for t in queued_before if t != sent]
    assert ledger_reads.history(fx.ledger, cancelled)[-1][1] == "CANCELLED operator cancelled"


def test_an_unknown_batch_is_batch_not_found(fx: Fixture) -> None:
    with pytest.raises(BatchNotFound):
        fx.controls.cancel("nope")


# --- pause and resume ------------------------------------------------------------------


def test_pause_says_every_switch_that_is_set(fx: Fixture) -> None:
    PauseSwitch(fx.redis, "t", account="AR").pause("code 4001: sign error")
    paused = fx.controls.pause("maintenance")
    assert paused.switches == {"all": "maintenance", "AR": "code 4001: sign error"}
    assert PauseSwitch(fx.redis, "t", account="JP").reason() == "maintenance"


def test_pause_and_resume_are_in_the_audit_trail(fx: Fixture) -> None:
    before = fx.ledger.audit_events()
    mark = before[-1].id if before else 0
    fx.controls.pause("maintenance")
    fx.controls.resume("dave")
    audited = [(e.who, e.action, e.note) for e in fx.ledger.audit_events(after=mark)]
    assert audited == [("tester", "pause", "maintenance"), ("dave", "resume", None)]


def test_resume_clears_every_switch_and_publishes_the_queued_orders(fx: Fixture) -> None:
    held = batch(fx.ledger, "AR", 2)
    queued = batch(fx.ledger, "ID", 3, hold=False)
    PauseSwitch(fx.redis, "t", account="AR").pause("code 4001: sign error")
    fx.controls.pause("maintenance")
    resumed = fx.controls.resume()
    assert resumed.was_paused == {"all": "maintenance", "AR": "code 4001: sign error"}
    assert resumed.published == 3
    assert sorted(fx.provider.published) == sorted(queued_orders(fx.ledger))
    assert counts(fx.ledger, queued) == {State.QUEUED: 3}
    assert counts(fx.ledger, held) == {State.HELD: 2}
    assert PauseSwitch(fx.redis, "t").paused() == {}
    again = fx.controls.resume()
    assert again.was_paused == {} and again.published == 3


# --- the public API and the commands ---------------------------------------------------


@pytest.fixture
def runtime_controls(fx: Fixture, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    """The process's controls are the fixture's (fakeredis, a fake provider)."""
    monkeypatch.setattr(runtime, "batch_controls", lambda: fx.controls)
    approvals = Approvals(fx.ledger, fx.provider.balance, fx.provider.publish, operator="tester")
    monkeypatch.setattr(runtime, "approvals", lambda: approvals)
    return fx


def test_the_public_api_reaches_the_controls(runtime_controls: Fixture) -> None:
    fx = runtime_controls
    batch_id = batch(fx.ledger, "AR", 2)
    assert worker.pause("maintenance").switches == {"all": "maintenance"}
    assert worker.approve(batch_id).moved == 2
    assert worker.cancel(batch_id).moved == 2
    assert worker.resume().was_paused == {"all": "maintenance"}
    with pytest.raises(worker.BatchNotFound):
        worker.approve("nope")


def test_disburse_cancel(runtime_controls: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    batch_id = batch(runtime_controls.ledger, "AR", 2)
    assert cli.run(["cancel", batch_id]) == 0
    assert capsys.readouterr().out == "cancelled 2 unsent payouts\n"
    assert cli.run(["cancel", "nope"]) == 1


def test_disburse_pause_and_resume(
    runtime_controls: Fixture, capsys: pytest.CaptureFixture[str]
) -> None:
    batch(runtime_controls.ledger, "ID", 3, hold=False)
    assert cli.run(["pause", "--reason", "maintenance"]) == 0
    out = capsys.readouterr().out
    assert "submissions paused cluster-wide" in out
    assert "paused: every provider account: maintenance" in out
    assert cli.run(["resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed; 3 queued payouts published" in out
    assert "was paused: every provider account: maintenance" in out
    assert cli.run(["resume"]) == 0
    assert "(nothing was paused)" in capsys.readouterr().out


def test_the_package_exports_what_an_application_sees() -> None:
    errors = {"DisburseError", "InvalidPayout", "UnknownMarket", "BatchNotFound", "ConfigError"}
    assert errors <= set(worker.__all__)
    workers_own = {
        "NotSent",
        "OutcomeUnknown",
        "Rejected",
        "ConfigurationRejected",
        "ProviderError",
    }
    assert not workers_own & set(worker.__all__)
    assert {"approve", "cancel", "pause", "resume"} <= set(worker.__all__)
    assert all(hasattr(worker, name) for name in worker.__all__)


# --- cancel: only what no POST was ever started for (issue 21 item 4) -------------------


def test_cancel_keeps_an_order_put_back_to_queued_after_a_post(fx: Fixture) -> None:
    batch_id = batch(fx.ledger, "AR", 3, hold=False)
    posted, recovered, unsent = queued_orders(fx.ledger)
    # A POST, then the "no record" resubmission put it back to QUEUED.
    fx.ledger.claim(posted)
    fx.ledger.transition(posted, State.UNKNOWN, source="submit")
    fx.ledger.transition(posted, State.QUEUED, source="lookup", note="no record: resubmit")
    # A connection that failed mid-POST: given back, but the POST was started.
    fx.ledger.claim(recovered)
    fx.ledger.give_back([recovered], why="not sent: NotSent", posted=True)
    result = fx.controls.cancel(batch_id)
    assert result.moved == 1
    assert result.not_cancelled == {posted: "QUEUED", recovered: "QUEUED"}
    assert "2 payouts may have reached the provider and were not cancelled" in result.message
    assert counts(fx.ledger, batch_id) == {State.CANCELLED: 1, State.QUEUED: 2}
    assert all("CANCELLED" not in line for _, line in ledger_reads.history(fx.ledger, posted))
    assert ledger_reads.history(fx.ledger, unsent)[-1][1] == "CANCELLED operator cancelled"


def test_cancel_takes_an_order_whose_claims_were_all_given_back_before_the_post(
    fx: Fixture,
) -> None:
    batch_id = batch(fx.ledger, "AR", 1, hold=False)
    (trade_no,) = queued_orders(fx.ledger)
    for _ in range(2):  # paused twice between its claim and its POST
        fx.ledger.claim(trade_no)
        fx.ledger.give_back([trade_no], why="paused", posted=False)
    result = fx.controls.cancel(batch_id)
    assert (result.moved, result.not_cancelled) == (1, {})
    assert counts(fx.ledger, batch_id) == {State.CANCELLED: 1}


def test_cancel_lists_the_orders_on_their_way(fx: Fixture) -> None:
    batch_id = batch(fx.ledger, "AR", 3, hold=False)
    sent, done, _ = queued_orders(fx.ledger)
    fx.ledger.claim(sent)
    fx.ledger.claim(done)
    fx.ledger.transition(done, State.SUCCEEDED, source="submit")
    result = fx.controls.cancel(batch_id)
    assert result.moved == 1
    assert result.not_cancelled == {sent: "SUBMITTING"}  # a final one is not listed
    assert "1 payout may have reached the provider and was not cancelled" in result.message


def test_a_claim_of_a_posted_order_given_back_unsent_still_keeps_it(fx: Fixture) -> None:
    batch_id = batch(fx.ledger, "AR", 1, hold=False)
    (trade_no,) = queued_orders(fx.ledger)
    fx.ledger.claim(trade_no)  # POSTed: the answer was lost, the claim recovered
    fx.ledger.transition(trade_no, State.UNKNOWN, source="lookup")
    fx.ledger.transition(trade_no, State.QUEUED, source="lookup")
    fx.ledger.claim(trade_no)  # the resubmission, then paused before its POST
    fx.ledger.give_back([trade_no], why="paused", posted=False)
    assert fx.controls.cancel(batch_id).not_cancelled == {trade_no: "QUEUED"}


def test_disburse_cancel_json_says_what_was_not_cancelled(
    runtime_controls: Fixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    fx = runtime_controls
    batch_id = batch(fx.ledger, "AR", 2, hold=False)
    posted, _ = queued_orders(fx.ledger)
    fx.ledger.claim(posted)
    fx.ledger.give_back([posted], why="not sent: NotSent", posted=True)
    assert cli.run(["cancel", batch_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch_id"] == batch_id and data["moved"] == 1
    assert data["not_cancelled"] == [{"trade_no": posted, "state": "QUEUED"}]
    assert cli.run(["cancel", batch_id]) == 0
    out = capsys.readouterr().out
    assert "cancelled 0 unsent payouts; 1 payout may have reached the provider" in out
    assert f"  not cancelled: {posted} (QUEUED)" in out


# --- pauses kept with who and why (issue 21 item 8) -------------------------------------


def test_a_second_pause_keeps_the_first_and_says_whose_it_is(fx: Fixture) -> None:
    first = fx.controls.pause("incident 42", operator="alice")
    assert first.already is None and first.records["all"].who == "alice"
    second = fx.controls.pause("lunch")
    assert second.already is not None
    assert (second.already.reason, second.already.who) == ("incident 42", "alice")
    assert second.switches == {"all": "incident 42"}


def test_resume_says_who_had_paused_and_who_resumed(fx: Fixture) -> None:
    fx.controls.pause("incident 42", operator="alice")
    resumed = fx.controls.resume()
    assert resumed.by == "tester" and resumed.records["all"].who == "alice"
    with fx.ledger.pool.connection() as conn:
        row = conn.execute("SELECT who, resumed_by FROM pauses").fetchone()
    assert row == ("alice", "tester")


def test_disburse_pause_twice_says_it_is_already_paused(
    runtime_controls: Fixture, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["pause", "--reason", "incident 42", "--operator", "alice"]) == 0
    capsys.readouterr()
    assert cli.run(["pause", "--reason", "lunch"]) == 0
    out = capsys.readouterr().out
    assert "already paused cluster-wide, not changed: by alice since " in out
    assert out.splitlines()[0].endswith(": incident 42")
    assert "lunch" not in out
    assert cli.run(["resume", "--operator", "bob"]) == 0
    assert "(by bob)" in capsys.readouterr().out
