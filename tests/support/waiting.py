"""Waiting for a condition instead of sleeping through a guess: one helper, the two
conditions the cluster tests wait on most, and reads that ride through an outage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import pytest
import redis

from worker.ledger import Ledger

T = TypeVar("T")


def wait_for(
    what: str,
    condition: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.25,
    seen: Callable[[], Any] | None = None,
) -> Any:
    """Until ``condition()`` is truthy, which it returns; on timeout the test fails,
    saying ``what`` it waited for and, when given, what ``seen()`` shows then."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            shown = f": {seen()}" if seen is not None else ""
            pytest.fail(f"not {what} within {timeout:g} s{shown}")
        time.sleep(interval)


def patiently(read: Callable[[], T], timeout: float = 30.0) -> T:
    """``read()``, retried while Redis or PostgreSQL is away (restarted or failing over;
    psycopg's OperationalError covers the pool's PoolTimeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except (redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_settled(ledger: Ledger, batch_ids: list[str], timeout: float) -> None:
    """Until every order of the batches is final or in REVIEW."""

    def counts() -> dict[str, Any]:
        summaries = {b: ledger.batch(b) for b in batch_ids}
        return {b: (s.counts if s else None) for b, s in summaries.items()}

    def settled() -> bool:
        return all((s := ledger.batch(b)) is not None and s.settled for b in batch_ids)

    wait_for("every batch settled", settled, timeout, seen=counts)


def kept_payloads(ledger: Ledger) -> int:
    """How many orders still keep their fields to send."""
    with ledger.pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM orders WHERE payload IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def wait_erased(ledger: Ledger, timeout: float) -> None:
    """Until no order keeps its fields to send."""
    wait_for("every payload erased", lambda: kept_payloads(ledger) == 0, timeout,
             seen=lambda: f"{kept_payloads(ledger)} orders keep theirs")  # fmt: skip
