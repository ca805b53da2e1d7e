"""The claim lease (migration 0011): a claim is leased by the server's clock, renewed by
its holder's heartbeat, and abandoned once the lease expired (worker.ledger.queries,
worker.ledger.transitions)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from schemas import Payout
from tests.unit.ledger_sql import backdate
from worker.core.states import State
from worker.ledger import Ledger
from worker.provider.report import ProviderReport

LEASE = 60.0  # the age rule, for claims made before leases (claim_expires_at NULL)


def orders(ledger: Ledger, n: int) -> list[str]:
    payouts = [
        Payout("ID", "IDR", Decimal(1000), None, {"amount": "1000", "bankAccountNo": f"{i:013d}"})
        for i in range(n)
    ]
    return [t for t, _ in ledger.create_orders(payouts, batch_id="b1", market="ID")]


def lease_of(ledger: Ledger, trade_no: str) -> tuple[datetime | None, datetime]:
    """(claim_expires_at, the server's now)."""
    with ledger.pool.connection() as conn:
        row = conn.execute(
            "SELECT claim_expires_at, now() FROM orders WHERE trade_no = %s", (trade_no,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def expire(ledger: Ledger, trade_no: str, seconds_ago: float = 1.0) -> None:
    """The claim's lease ended ``seconds_ago`` (its holder stopped renewing it)."""
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET claim_expires_at = now() - %s * interval '1 second' "
            "WHERE trade_no = %s",
            (seconds_ago, trade_no),
        )


def test_a_claim_is_leased_for_the_ttl_by_the_servers_clock(ledger: Ledger) -> None:
    ledger = Ledger(ledger.pool, claim_ttl=15.0)
    (t,) = orders(ledger, 1)
    assert lease_of(ledger, t)[0] is None  # QUEUED: no claim, no lease
    assert ledger.claim_many([t])[0][0].moved
    expires, now = lease_of(ledger, t)
    assert expires is not None and 14.0 < (expires - now).total_seconds() <= 15.0


def test_leaving_submitting_ends_the_lease(ledger: Ledger) -> None:
    a, b = orders(ledger, 2)
    ledger.claim_many([a, b])
    ledger.claim_many([], answers=[(a, ProviderReport(State.PROCESSING, "p-1", "0015", ""))])
    ledger.give_back([b], why="paused", posted=False)
    assert lease_of(ledger, a)[0] is None and lease_of(ledger, b)[0] is None


def test_renewal_renews_only_the_held_orders_still_submitting(ledger: Ledger) -> None:
    held, other, answered = orders(ledger, 3)
    ledger.claim_many([held, other, answered])
    for t in (held, other, answered):
        expire(ledger, t)
    ledger.claim_many([], answers=[(answered, ProviderReport(State.PROCESSING, "p", "0015", ""))])
    assert ledger.renew_claims([held, answered, "nope"]) == 1
    expires, now = lease_of(ledger, held)
    assert expires is not None and expires > now
    assert not ledger.stale_claim(held, LEASE)
    assert ledger.stale_claim(other, LEASE)  # not held: left to expire
    assert lease_of(ledger, answered)[0] is None  # PROCESSING: no lease set again


def test_a_claim_is_abandoned_once_its_lease_expired_whatever_its_age(ledger: Ledger) -> None:
    young, old = orders(ledger, 2)
    ledger.claim_many([young, old])
    backdate(ledger, old, 3600)  # claimed an hour ago, renewed until now
    ledger.renew_claims([old])
    assert not ledger.stale_claim(old, LEASE) and ledger.abandoned_for(old, LEASE) is None
    expire(ledger, young, 5)  # claimed moments ago, its worker killed
    assert ledger.stale_claim(young, LEASE)
    since = ledger.abandoned_for(young, LEASE)
    assert since is not None and 4.0 < since < 6.0
    now = ledger.now_ms()
    assert [t for t, _ in ledger.abandoned_claims(LEASE, now_ms=now)] == [young]


def test_a_claim_from_before_leases_falls_back_on_its_age(ledger: Ledger) -> None:
    queued, young, old = orders(ledger, 3)
    ledger.claim_many([young, old])
    with ledger.pool.connection() as conn:
        conn.execute("UPDATE orders SET claim_expires_at = NULL")
    backdate(ledger, old, LEASE + 1)
    assert ledger.stale_claim(old, LEASE) and not ledger.stale_claim(young, LEASE)
    assert not ledger.stale_claim(queued, 0) and not ledger.stale_claim("nope", 0)
    found = ledger.abandoned_claims(LEASE, now_ms=ledger.now_ms())
    assert [t for t, _ in found] == [old]


def test_a_move_for_abandoned_claims_only_leaves_a_live_one_alone(ledger: Ledger) -> None:
    live, dead = orders(ledger, 2)
    ledger.claim_many([live, dead])
    expire(ledger, dead)
    for t in (live, dead):
        ledger.transition(
            t, State.QUEUED, source="lookup", expect=[State.SUBMITTING], abandoned_only=True
        )
    assert [o.state for o in ledger.get_many([live, dead]) if o] == [
        State.SUBMITTING,
        State.QUEUED,
    ]


def test_a_lease_left_by_an_earlier_claim_never_counts(ledger: Ledger) -> None:
    (t,) = orders(ledger, 1)
    ledger.claim_many([t])
    expire(ledger, t)
    with ledger.pool.connection() as conn:
        # A process of the version before 0011 (during an upgrade) moved the order on
        # and claimed it again, touching neither lease column: the lease is not its own.
        conn.execute(
            "UPDATE orders SET attempts = attempts + 1, state_entered_at = now() "
            "WHERE trade_no = %s",
            (t,),
        )
    assert not ledger.stale_claim(t, LEASE)  # judged by its age: claimed just now
    assert ledger.renew_claims([t]) == 0  # nor is another claim's lease renewed
    backdate(ledger, t, LEASE + 1)
    assert ledger.stale_claim(t, LEASE)
