"""Submitting a chunk whose orders belong to several provider accounts: each through the
:class:`worker.flows.submit.Submitter` of its market's account."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from worker.core.exceptions import MarketUnavailable
from worker.flows.submit import ChunkReport, Submitter
from worker.ledger import Ledger

log = logging.getLogger(__name__)


class MarketSubmitters:
    """Submits any orders, each through the :class:`Submitter` of its market's account.

    A chunk's markets are read in one round trip before anything is claimed, so every
    claim (pause switch, rate-limit slot, claim and payload) is already that account's.
    Accounts run one after the other within the one budget. The orders of a market
    without an account (its settings removed since they were enqueued) are not claimed:
    they stay QUEUED, logged as an error, until the account is configured again (the
    sweeper publishes them again now and then, and they are logged again).
    """

    def __init__(self, ledger: Ledger, for_market: Callable[[str], Submitter]) -> None:
        self.ledger = ledger
        self.for_market = for_market

    def run(self, trade_nos: Sequence[str], budget: float) -> ChunkReport:
        deadline = time.monotonic() + budget
        report = ChunkReport()
        for submitter, group in self._by_account(trade_nos):
            if submitter.pause.reason() is not None:
                # As a paused Submitter leaves them: QUEUED, published again on resume. Not
                # even claimed, so a paused account's orders do not churn on every sweep.
                report.paused = True
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                report.leftover += group
                continue
            part = submitter.run(group, left)
            report.retry += part.retry
            report.query += part.query
            report.leftover += part.leftover
            report.paused = report.paused or part.paused
            report.done += part.done
        return report

    def _by_account(self, trade_nos: Sequence[str]) -> list[tuple[Submitter, list[str]]]:
        """The orders grouped by account, in order; orders that do not exist, or whose
        market has no account, are left out."""
        groups: dict[Submitter, list[str]] = {}
        unserved: dict[str, list[str]] = {}
        for trade_no, order in zip(trade_nos, self.ledger.get_many(trade_nos), strict=True):
            if order is None:
                continue
            try:
                submitter = self.for_market(order.market)
            except MarketUnavailable as exc:
                unserved.setdefault(str(exc), []).append(trade_no)
                continue
            groups.setdefault(submitter, []).append(trade_no)
        for why, left in unserved.items():
            log.error("%d payouts left QUEUED, not sent: %s", len(left), why)
        return list(groups.items())
