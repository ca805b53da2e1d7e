"""A batch's terms in the ledger: who created it, the approvals it needs and those given
(each by another person), its schedule, and its release, which the daily limit allows.

A batch is *released* once: ``batches.released_at`` is set in the transaction that
checks the daily limit (under the enqueue lock, so two releases never both fit in the
last of a day's allowance), and only then are its HELD orders moved to QUEUED. A release
interrupted between the two is completed by the next one (worker.flows.approvals)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property

import psycopg

from worker.core.policy import MarketPolicy, daily_limit_reason
from worker.ledger.queries import Queries
from worker.ledger.sql import ENQUEUE_LOCK

# What the batches of a market released since a time were enqueued to pay, in one
# currency: a sum over those batches' totals (the index of releases finds them), so it
# costs the same however many payouts they hold. A payout cancelled after its release
# still counts: the allowance is of what was released.
RELEASED_SINCE = """
SELECT coalesce(sum(t.amount), 0) FROM batches b JOIN batch_totals t ON t.batch_id = b.id
WHERE b.market = %(market)s AND b.released_at >= %(since)s AND b.id <> %(batch)s
  AND t.currency = %(currency)s
"""
# The rows of a batch whose beneficiary gets more than the limit since a time (payouts
# that paid nothing, such as a FAILED one retried, do not count): each of the batch's
# beneficiaries once, its day's payouts found by the index of beneficiaries.
BENEFICIARIES_OVER = """
WITH mine AS (
    SELECT beneficiary, array_agg(row_no) AS rows FROM orders
    WHERE batch_id = %(batch)s AND beneficiary IS NOT NULL AND currency = %(currency)s
    GROUP BY beneficiary
)
SELECT m.rows, t.amount FROM mine m CROSS JOIN LATERAL (
    SELECT sum(o.amount) AS amount FROM orders o
    WHERE o.beneficiary = m.beneficiary AND o.created_at >= %(since)s
      AND o.currency = %(currency)s AND o.state NOT IN ('CANCELLED', 'FAILED', 'REVERSED')
) t
WHERE t.amount > %(limit)s
"""


@dataclass(frozen=True)
class BatchTerms:
    """What a new batch is stored with: who created it, the approvals it needs, when it
    may go at the earliest, why it waits from the start (None: released as it is stored,
    if the daily limit allows), and the market's policy with the start of its local day."""

    created_by: str | None = None
    approvals_needed: int = 0
    not_before: datetime | None = None
    held: str | None = None
    policy: MarketPolicy | None = None
    day_start: datetime | None = None


@dataclass(frozen=True)
class BatchHold:
    """Where a batch stands on its way to release."""

    batch_id: str
    market: str
    created_by: str | None
    approvals_needed: int
    approvals: tuple[tuple[str, datetime], ...]
    not_before: datetime | None
    released_at: datetime | None
    limit_override: str | None
    held_reason: str | None
    totals: dict[str, Decimal]

    @property
    def approvers(self) -> list[str]:
        return [who for who, _ in self.approvals]


class OverBeneficiaryLimit(Exception):
    """Rows whose beneficiary would get more than its daily limit: row -> why."""

    def __init__(self, rows: dict[int, str]) -> None:
        super().__init__(f"{len(rows)} rows over the beneficiary daily limit")
        self.rows = rows


class Approvals(Queries):
    """Batch terms, approvals and releases."""

    @cached_property
    def beneficiary_salt(self) -> bytes:
        """This database's key of beneficiary digests (migration 0012)."""
        with self._connection() as conn:
            row = conn.execute("SELECT key FROM ledger_keys WHERE name = 'beneficiary'").fetchone()
        assert row is not None, "migration 0012 draws the key"
        return str(row[0]).encode()

    def hold(self, batch_id: str) -> BatchHold | None:
        with self._connection() as conn:
            head = conn.execute(
                "SELECT market, created_by, approvals_needed, not_before, released_at, "
                "limit_override, hold_reason FROM batches WHERE id = %s",
                (batch_id,),
            ).fetchone()
            if head is None:
                return None
            approvals = conn.execute(
                "SELECT who, at FROM batch_approvals WHERE batch_id = %s ORDER BY at, who",
                (batch_id,),
            ).fetchall()
            totals = conn.execute(
                "SELECT currency, amount FROM batch_totals WHERE batch_id = %s", (batch_id,)
            ).fetchall()
        market, created_by, needed, not_before, released_at, override, reason = head
        return BatchHold(
            batch_id,
            market,
            created_by,
            needed,
            tuple((who, at) for who, at in approvals),
            not_before,
            released_at,
            override,
            reason,
            dict(totals),
        )

    def add_approval(self, batch_id: str, who: str, *, four_eyes: bool = True) -> bool:
        """Record ``who``'s approval; False when they had given one already, or (with
        ``four_eyes``) created the batch: the caller refuses the creator first, and the
        statement refuses them too."""
        with self._connection() as conn:
            row = conn.execute(
                "INSERT INTO batch_approvals (batch_id, who) SELECT id, %(who)s FROM batches "
                "WHERE id = %(batch)s AND (NOT %(four_eyes)s OR created_by IS DISTINCT FROM "
                "%(who)s) ON CONFLICT DO NOTHING RETURNING 1",
                {"batch": batch_id, "who": who, "four_eyes": four_eyes},
            ).fetchone()
        return row is not None

    def override_limit(self, batch_id: str, note: str) -> None:
        with self._connection() as conn:
            conn.execute("UPDATE batches SET limit_override = %s WHERE id = %s", (note, batch_id))

    def claim_release(
        self, batch_id: str, policy: MarketPolicy | None, since: datetime | None
    ) -> str | None:
        """Mark the batch released unless that passes its market's daily limit (counted
        since ``since``, the start of the local day; an override lets it pass): None
        when it is released (now or before), else why it waits."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ENQUEUE_LOCK,))
            row = conn.execute(
                "SELECT market, released_at, limit_override FROM batches WHERE id = %s FOR UPDATE",
                (batch_id,),
            ).fetchone()
            assert row is not None
            market, released_at, override = row
            if released_at is not None:
                return None
            if policy is not None and since is not None and override is None:
                reason = self._over_daily(conn, batch_id, market, policy, since)
                if reason is not None:
                    return reason
            conn.execute("UPDATE batches SET released_at = now() WHERE id = %s", (batch_id,))
        return None

    @staticmethod
    def _over_daily(
        conn: psycopg.Connection,
        batch_id: str,
        market: str,
        policy: MarketPolicy,
        since: datetime,
    ) -> str | None:
        """Why the batch passes the daily limit (in the enqueue lock's transaction)."""
        if policy.daily_limit is None:
            return None
        params = {"market": market, "since": since, "batch": batch_id, "currency": policy.currency}
        released = conn.execute(RELEASED_SINCE, params).fetchone()
        mine = conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM orders WHERE batch_id = %(batch)s "
            "AND currency = %(currency)s AND state <> 'CANCELLED'",
            params,
        ).fetchone()
        assert released is not None and mine is not None
        return daily_limit_reason(policy, released[0], mine[0])

    @staticmethod
    def _beneficiaries_over(
        conn: psycopg.Connection, batch_id: str, policy: MarketPolicy, since: datetime
    ) -> None:
        """Raise OverBeneficiaryLimit naming the batch's rows whose beneficiary gets more
        than its daily limit today, this batch included."""
        limit = policy.beneficiary_daily_limit
        if limit is None:
            return
        params = {"batch": batch_id, "since": since, "limit": limit, "currency": policy.currency}
        found = conn.execute(BENEFICIARIES_OVER, params).fetchall()
        if found:
            ceiling = f"{limit:,} {policy.currency}"
            over = {
                row: f"beneficiary daily limit: this account would get {amount:,} of "
                f"{ceiling} today"
                for rows, amount in found
                for row in rows
            }
            raise OverBeneficiaryLimit(dict(sorted(over.items())))

    def releasable(self, limit: int = 100) -> list[str]:
        """Batches with HELD orders that no approval keeps waiting (enough given), oldest
        first: the beat releases those the schedule, the limit and the balance allow."""
        with self._connection() as conn:
            rows = conn.execute(
                # HELD spelled as a literal: the index of open orders finds them.
                "SELECT b.id FROM batches b "
                "WHERE b.id IN (SELECT batch_id FROM orders WHERE state = 'HELD') "
                "AND b.approvals_needed <= "
                "  (SELECT count(*) FROM batch_approvals a WHERE a.batch_id = b.id) "
                "ORDER BY b.created_at LIMIT %s",
                (limit,),
            ).fetchall()
        return [row[0] for row in rows]
