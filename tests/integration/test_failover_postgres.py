"""Failover drill: the PostgreSQL primary SIGKILLed mid-batch and its standby promoted
(synchronous replication), workers killed meanwhile (tests/support/failover.py)."""

from __future__ import annotations

import pytest

from tests.support.failover import drill

pytestmark = pytest.mark.integration


def test_a_postgresql_failover_mid_batch_pays_nothing_twice_and_loses_nothing() -> None:
    drill(lambda postgres, _: postgres.fail_over(), "PostgreSQL primary killed, standby promoted")
