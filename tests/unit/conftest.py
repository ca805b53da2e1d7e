"""Fixtures shared by the unit tests of more than one module."""

from __future__ import annotations

import pytest

from worker.core.confirm import Word
from worker.core.states import State
from worker.dev.credentials import sandbox_settings
from worker.flows.producer import Producer
from worker.ledger import Ledger, Order
from worker.provider.report import ProviderReport
from worker.provider.vexora import VexoraClient


@pytest.fixture
def published() -> list[list[str]]:
    return []


@pytest.fixture
def make_producer(ledger: Ledger, published: list[list[str]]) -> Producer:
    settings = sandbox_settings(env={"NOTIFY_URL": "https://merchant.example/notify"})
    return Producer(
        ledger,
        settings,
        publish=lambda trade_nos: published.append(list(trade_nos)),
        sign=lambda market: VexoraClient.from_settings(settings, market).signed_body,
        ask=failed_through_both_apis,
    )


def failed_through_both_apis(order: Order) -> Word:
    """A provider that confirms every payout asked about failed (details API and status
    query): what a retry needs (worker.core.confirm); test_retry_failed asks real lookups."""
    failed = ProviderReport(State.FAILED, order.platform_trade_no, "00029", "")
    return Word(failed, failed)
