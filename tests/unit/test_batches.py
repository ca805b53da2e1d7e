"""Approving a held batch checks the balance of its market's provider account; the CLI's
exit code says whether the batch stays held."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import fakeredis
import pytest

from schemas import Payout
from worker import cli, runtime
from worker.batches import BatchControls, ControlResult
from worker.ledger import Ledger
from worker.states import State
from worker.vexora import Balance

FIELDS = {"amount": "500", "accountNo": "880123456789012345"}


def held_batch(ledger: Ledger, market: str, n: int) -> str:
    payouts = [Payout(market, "ARS", Decimal(500), None, FIELDS) for _ in range(n)]
    ledger.create_orders(payouts, batch_id="b-" + market, market=market, hold=True)
    return "b-" + market


def test_the_balance_asked_is_that_of_the_batch_market_account() -> None:
    ledger = Ledger(fakeredis.FakeRedis(decode_responses=True), prefix="t")
    balances = {"AR": Decimal(1200), "ID": Decimal(10**9)}
    asked: list[str] = []
    published: list[str] = []

    def balance(market: str) -> Balance:
        asked.append(market)
        return Balance(balances[market], Decimal(0), Decimal(0))

    def publish(trade_nos: Sequence[str]) -> None:
        published.extend(trade_nos)

    controls = BatchControls(ledger, balance, publish)
    batch_id = held_batch(ledger, "AR", 3)  # 1500 ARS
    result = controls.approve(batch_id)
    assert asked == ["AR"]
    assert result.moved == 0 and "balance 1200 ARS does not cover" in result.message
    assert result.still_held
    balances["AR"] = Decimal(1500)
    released = controls.approve(batch_id)
    assert released.moved == 3 and not released.still_held
    summary = ledger.batch(batch_id)
    assert summary is not None and summary.counts == {State.QUEUED: 3}
    assert len(published) == 3


def test_a_batch_cancelled_while_approve_reads_the_balance_is_not_still_held() -> None:
    ledger = Ledger(fakeredis.FakeRedis(decode_responses=True), prefix="t")
    batch_id = held_batch(ledger, "AR", 2)

    def balance(market: str) -> Balance:
        controls.cancel(batch_id)  # another operator, at the same moment
        return Balance(Decimal(10**9), Decimal(0), Decimal(0))

    controls = BatchControls(ledger, balance, lambda trade_nos: None)
    result = controls.approve(batch_id)
    assert result.moved == 0 and not result.still_held
    nothing = controls.approve(batch_id)  # the same, one after the other
    assert nothing.moved == 0 and not nothing.still_held


class Approving:
    """BatchControls whose approve answers ``result``."""

    def __init__(self, result: ControlResult) -> None:
        self.result = result

    def approve(self, batch_id: str, *, check_balance: bool = True) -> ControlResult:
        return self.result


@pytest.mark.parametrize(
    ("result", "exit_code"),
    [
        (ControlResult("b", 0, "still held: nothing can cover it", still_held=True), 2),
        (ControlResult("b", 0, "nothing is held in this batch"), 0),
        (ControlResult("b", 0, "released 0 payouts"), 0),
        (ControlResult("b", 3, "released 3 payouts"), 0),
    ],
)
def test_approve_exits_2_exactly_when_the_batch_stays_held_whatever_the_wording(
    monkeypatch: pytest.MonkeyPatch, result: ControlResult, exit_code: int
) -> None:
    monkeypatch.setattr(runtime, "batch_controls", lambda: Approving(result))
    assert cli.main(["approve", "b"]) == exit_code
