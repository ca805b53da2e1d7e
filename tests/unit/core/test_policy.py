"""The policy's rules (worker.core.policy) and its file (worker.core.policy_file)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from worker.core.config import load_settings
from worker.core.exceptions import ConfigError
from worker.core.policy import (
    MarketPolicy,
    approvals_reason,
    beneficiary_key,
    daily_limit_reason,
    local_day_start,
)
from worker.core.policy_file import parse_policy

EXAMPLE = b"""
[markets.ID]
max_payout = "50000000"
daily_limit = "2000000000"
beneficiary_daily_limit = "100000000"
approvals = [
  { total_over = "0", approvals = 1 },
  { total_over = "500000000", payout_over = "20000000", approvals = 2 },
]
"""


def id_policy() -> MarketPolicy:
    policy = parse_policy(EXAMPLE, "policy.toml").of("ID")
    assert policy is not None
    return policy


def test_the_example_file_is_read_with_decimal_amounts_and_its_digest() -> None:
    policy = parse_policy(EXAMPLE, "policy.toml")
    market = policy.of("ID")
    assert market is not None
    assert market.currency == "IDR"
    assert market.max_payout == Decimal("50000000")
    assert market.daily_limit == Decimal("2000000000")
    assert len(policy.digest) == 64
    assert policy.of("AR") is None


@pytest.mark.parametrize(
    ("total", "largest", "needed"),
    [
        (Decimal("100000"), Decimal("100000"), 1),  # over 0: one approval
        (Decimal("600000000"), Decimal("10000000"), 2),  # band by total
        (Decimal("30000000"), Decimal("30000000"), 2),  # band by one payout
        (Decimal("500000000"), Decimal("20000000"), 1),  # "over" is strictly over
    ],
)
def test_the_highest_rule_a_batch_meets_applies(
    total: Decimal, largest: Decimal, needed: int
) -> None:
    assert id_policy().approvals_needed(total, largest) == needed


def test_a_payout_over_max_payout_is_refused() -> None:
    assert id_policy().over_max(Decimal("50000000")) is None
    assert "max_payout of 50,000,000 IDR" in (id_policy().over_max(Decimal("50000001")) or "")


def test_the_daily_limit_says_what_was_released_today() -> None:
    policy = id_policy()
    assert daily_limit_reason(policy, Decimal("1900000000"), Decimal("100000000")) is None
    reason = daily_limit_reason(policy, Decimal("1950000000"), Decimal("100000000"))
    assert reason is not None
    assert reason.startswith("daily limit: 1,950,000,000 of 2,000,000,000 IDR released today")


def test_approvals_reason_names_who_gave_them() -> None:
    assert approvals_reason(2, ["alice"]) == "needs 2 approvals, 1 given by alice"
    assert approvals_reason(1, []) == "needs 1 approval, none given yet"
    assert approvals_reason(2, ["alice", "bob"]) is None


def test_the_local_day_is_the_markets() -> None:
    jakarta = ZoneInfo("Asia/Jakarta")  # UTC+7: 18:00 UTC is the next day there
    at = datetime(2026, 12, 8, 18, 0, tzinfo=UTC)
    assert local_day_start(at, jakarta) == datetime(2026, 12, 8, 17, 0, tzinfo=UTC)
    assert local_day_start(datetime(2026, 12, 8, 16, 59, tzinfo=UTC), jakarta) == datetime(
        2026, 12, 7, 17, 0, tzinfo=UTC
    )


def test_a_beneficiary_key_is_the_same_for_one_account_and_hides_it() -> None:
    fields = {"bankCode": "0002", "bankAccountNo": "1234567890", "customerName": "A"}
    key = beneficiary_key(b"salt", "ID", fields)
    assert key == beneficiary_key(b"salt", "ID", {**fields, "customerName": "B"})
    assert key != beneficiary_key(b"salt", "ID", {**fields, "bankAccountNo": "1234567891"})
    assert key is not None and "1234567890" not in key
    assert beneficiary_key(b"salt", "ID", {"bankCode": "0002"}) is None


def test_every_mistake_is_one_line_naming_its_key() -> None:
    bad = b"""
extra = 1
[markets.XX]
max_payout = "1"
[markets.ID]
max_payout = 50000000
daily_limit = "-5"
colour = "red"
approvals = [{ total_over = "abc", approvals = 0 }, { approvals = 1 }]
"""
    with pytest.raises(ConfigError) as raised:
        parse_policy(bad, "p.toml")
    lines = str(raised.value).splitlines()
    assert lines[0] == "DISBURSE_POLICY=p.toml has 8 mistakes:"
    said = "\n".join(lines[1:])
    for key in (
        "extra: unknown key",
        "markets.XX: 'XX' is not a market",
        "markets.ID.max_payout: write the amount as a decimal string",
        "markets.ID.daily_limit: '-5' must be more than zero",
        "markets.ID.colour: unknown key",
        "markets.ID.approvals[1].total_over: 'abc' is not a decimal amount",
        "markets.ID.approvals[1].approvals: must be a whole number from 1 to 5",
        "markets.ID.approvals[2]: says neither total_over nor payout_over",
    ):
        assert key in said


def test_a_file_that_is_not_toml_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^DISBURSE_POLICY=p.toml: not TOML: "):
        parse_policy(b"[markets.ID\n", "p.toml")


def test_kh_limits_may_be_in_usd_but_not_in_yen() -> None:
    policy = parse_policy(b'[markets.KH]\ncurrency = "USD"\nmax_payout = "100"\n', "p")
    assert policy.of("KH") == MarketPolicy("KH", "USD", max_payout=Decimal(100))
    with pytest.raises(ConfigError, match=r"markets\.KH\.currency: 'JPY' is not paid in KH"):
        parse_policy(b'[markets.KH]\ncurrency = "JPY"\n', "p")


def test_settings_read_the_file_named_by_disburse_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(EXAMPLE)
    settings = load_settings({"DISBURSE_POLICY": str(path), "APPROVALS_REQUIRE_LOGIN": "true"})
    assert settings.policy is not None and settings.policy.of("ID") == id_policy()
    assert settings.approvals_require_login
    assert load_settings({}).policy is None
    with pytest.raises(ConfigError, match=r"DISBURSE_POLICY=.*missing.toml: cannot read it"):
        load_settings({"DISBURSE_POLICY": str(tmp_path / "missing.toml")})
