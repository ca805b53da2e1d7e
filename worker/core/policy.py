"""Who may release how much (DISBURSE_POLICY): the policy's types and its pure rules.

Per market: ``max_payout`` (a larger row is a row error), ``daily_limit`` (released per
local day in the market's time zone), ``beneficiary_daily_limit`` (per beneficiary
account per local day: a row error), and approval rules by amount band (the highest rule
a batch meets applies). Amounts are in the market policy's ``currency`` (the market's
first currency unless the file says). Read from the TOML file by
:mod:`worker.core.policy_file`; applied by worker.flows.approvals and the producer.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

# The local day of each market, for the daily limits.
MARKET_ZONES: Mapping[str, str] = {
    "ID": "Asia/Jakarta",
    "AR": "America/Argentina/Buenos_Aires",
    "JP": "Asia/Tokyo",
    "KH": "Asia/Phnom_Penh",
}
# The fields that name a beneficiary's account in each market (its beneficiary limit).
BENEFICIARY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "ID": ("bankCode", "bankAccountNo"),
    "AR": ("accountNo",),
    "JP": ("bankCode", "bankNumber"),
    "KH": ("channelCode", "wayCode", "bankNumber"),
}


@dataclass(frozen=True)
class ApprovalRule:
    """A batch whose total is over ``total_over``, or with a payout over ``payout_over``,
    needs ``approvals`` different people (not its creator)."""

    approvals: int
    total_over: Decimal | None = None
    payout_over: Decimal | None = None

    def met_by(self, total: Decimal, largest: Decimal) -> bool:
        return (self.total_over is not None and total > self.total_over) or (
            self.payout_over is not None and largest > self.payout_over
        )


@dataclass(frozen=True)
class MarketPolicy:
    market: str
    currency: str
    max_payout: Decimal | None = None
    daily_limit: Decimal | None = None
    beneficiary_daily_limit: Decimal | None = None
    approvals: tuple[ApprovalRule, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(MARKET_ZONES[self.market])

    def approvals_needed(self, total: Decimal, largest: Decimal) -> int:
        """The approvals of the highest rule the batch meets (0: none)."""
        return max((r.approvals for r in self.approvals if r.met_by(total, largest)), default=0)

    def over_max(self, amount: Decimal) -> str | None:
        """Why a payout of ``amount`` is refused (over ``max_payout``), or None."""
        if self.max_payout is not None and amount > self.max_payout:
            return f"over the policy's max_payout of {money(self.max_payout, self.currency)}"
        return None


@dataclass(frozen=True)
class Policy:
    """The whole file: each market's policy, and the file's sha256 (the audit trail
    records which policy was in force)."""

    markets: Mapping[str, MarketPolicy] = field(default_factory=dict)
    digest: str = ""
    source: str = ""

    def of(self, market: str) -> MarketPolicy | None:
        return self.markets.get(market)


def money(amount: Decimal, currency: str) -> str:
    """``1,950,000,000 IDR``: an amount as people read it."""
    return f"{amount:,} {currency}"


def local_day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The start of ``now``'s day in ``zone`` (an aware datetime)."""
    local = now.astimezone(zone)
    return datetime.combine(local.date(), time(0), tzinfo=zone)


def next_day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """When ``now``'s day in ``zone`` ends."""
    start = local_day_start(now, zone)
    return datetime.combine(start.date() + timedelta(days=1), time(0), tzinfo=zone)


def daily_limit_reason(policy: MarketPolicy, released: Decimal, total: Decimal) -> str | None:
    """Why a batch of ``total`` waits, ``released`` having been released today; None
    when it fits under the daily limit."""
    limit = policy.daily_limit
    if limit is None or released + total <= limit:
        return None
    return (
        f"daily limit: {released:,} of {money(limit, policy.currency)} released today, "
        f"this batch {total:,}"
    )


def approvals_reason(needed: int, given: Iterable[str]) -> str | None:
    """``needs 2 approvals, 1 given by alice``; None when enough were given."""
    names = list(given)
    if len(names) >= needed:
        return None
    said = f"needs {needed} approval{'s' if needed != 1 else ''}"
    if names:
        return f"{said}, {len(names)} given by {', '.join(names)}"
    return f"{said}, none given yet"


def scheduled_reason(not_before: datetime) -> str:
    return f"scheduled for {not_before.isoformat()}"


def beneficiary_key(salt: bytes, market: str, fields: Mapping[str, str]) -> str | None:
    """A keyed digest of the beneficiary's account (never the account itself), the same
    for every payout to it; None when the row does not name one."""
    values = [fields.get(name, "").strip() for name in BENEFICIARY_FIELDS.get(market, ())]
    if not values or not all(values):
        return None
    text = "\x1f".join((market, *values)).encode()
    return hmac.new(salt, text, hashlib.sha256).hexdigest()[:32]
