"""Fixtures shared by the unit tests of more than one module."""

from __future__ import annotations

import pytest

from worker.dev.credentials import sandbox_settings
from worker.ledger import Ledger
from worker.producer import Producer
from worker.vexora import VexoraClient


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
    )
