"""Settlement: each accepted payout reaches its decided final status after its delay."""

from __future__ import annotations

import time

from worker.sandbox.scheduler import Scheduler
from worker.sandbox.state import Payout, State
from worker.sandbox.webhooks import WebhookSender


class Settlement:
    def __init__(self, state: State, scheduler: Scheduler, webhooks: WebhookSender) -> None:
        self._state = state
        self._scheduler = scheduler
        self._webhooks = webhooks

    def schedule(self, payout: Payout, generation: int) -> None:
        trade_no = payout.trade_no

        def due() -> None:
            self.settle(trade_no, generation)

        self._scheduler.call_later(payout.fate.settle_after, due)

    def settle(self, trade_no: str, generation: int) -> bool:
        """Settle now (idempotent); the webhook follows. False if nothing changed."""
        settled = self._state.settle(trade_no, generation, time.time())
        if settled is None:
            return False
        self._webhooks.payout_settled(settled, generation)
        return True

    def settle_all(self) -> int:
        """Settle every processing payout at once (tests that do not want to wait)."""
        generation = self._state.generation
        return sum(self.settle(t, generation) for t in self._state.processing())
