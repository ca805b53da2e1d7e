"""Approving a held batch checks the balance of its market's provider account."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import fakeredis

from schemas import Payout
from worker.controls import BatchControls
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
    balances["AR"] = Decimal(1500)
    assert controls.approve(batch_id).moved == 3
    summary = ledger.batch(batch_id)
    assert summary is not None and summary.counts == {State.QUEUED: 3}
    assert len(published) == 3
