"""The claim heartbeat (worker.flows.heartbeat): renews what is held, in one statement
per tick, until dropped; a failed renewal never ends it."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import pytest

from tests.support.waiting import wait_for
from worker.flows.heartbeat import ClaimHeartbeat


class Renewals:
    """A fake ledger: records each renewal; fails the ones it is told to."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.failures = failures

    def renew_claims(self, trade_nos: Sequence[str]) -> int:
        self.calls.append(sorted(trade_nos))
        if self.failures:
            self.failures -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return len(trade_nos)


def test_held_claims_are_renewed_together_until_dropped() -> None:
    renewals = Renewals()
    heartbeat = ClaimHeartbeat(renewals, ttl=180)  # ticks by hand
    heartbeat.renew()
    assert renewals.calls == []  # nothing held: no statement
    heartbeat.hold(["a", "b"])
    heartbeat.hold(["c"])
    heartbeat.renew()
    heartbeat.drop(["a", "c"])
    heartbeat.renew()
    heartbeat.drop(["b"])
    heartbeat.renew()
    assert renewals.calls == [["a", "b", "c"], ["b"]]
    heartbeat.stop()


def test_a_claim_held_twice_stays_held_until_dropped_twice() -> None:
    # Given back and claimed again by another thread of the process before the first
    # drop: the second claim must still be renewed.
    heartbeat = ClaimHeartbeat(Renewals(), ttl=180)
    heartbeat.hold(["a"])
    heartbeat.hold(["a"])
    heartbeat.drop(["a"])
    assert heartbeat.held() == ["a"]
    heartbeat.drop(["a", "never-held"])
    assert heartbeat.held() == []
    heartbeat.stop()


def test_the_thread_renews_every_tick_and_outlives_a_database_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    renewals = Renewals(failures=2)
    heartbeat = ClaimHeartbeat(renewals, ttl=0.03)  # a tick every 0.01 s
    heartbeat.hold(["a"])
    wait_for("renewals after two failed ones", lambda: len(renewals.calls) >= 4, timeout=10)
    heartbeat.stop()
    assert renewals.calls[:4] == [["a"]] * 4
    failed = [r.getMessage() for r in caplog.records if "not renewed" in r.getMessage()]
    assert len(failed) == 2 and "OperationalError" in failed[0]
    assert "server closed" not in failed[0]  # the type only: a message may name the server


def test_a_claim_is_alive_for_posting_only_while_its_lease_has_a_tick_left_for_certain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("worker.flows.heartbeat.time.monotonic", lambda: clock[0])
    renewals = Renewals()
    heartbeat = ClaimHeartbeat(renewals, ttl=15)  # renewed every 5 s (by hand here)
    heartbeat.hold(["a"])
    assert heartbeat.alive("a") and not heartbeat.alive("never-held")
    clock[0] += 9.9
    assert heartbeat.alive("a")
    clock[0] += 0.2  # two ticks without a renewal: the lease may end within one
    assert not heartbeat.alive("a")
    heartbeat.renew()
    assert heartbeat.alive("a")
    renewals.failures = 2
    for _ in range(2):
        clock[0] += 5
        heartbeat.renew()
    clock[0] += 0.1
    assert not heartbeat.alive("a")  # two failed renewals
    clock[0] += 4.9
    heartbeat.renew()  # the database is back
    assert heartbeat.alive("a")
    heartbeat.drop(["a"])
    assert not heartbeat.alive("a")
    heartbeat.stop()
