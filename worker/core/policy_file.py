"""The policy file (DISBURSE_POLICY, TOML) read and checked: every mistake is one line
naming its key, and all of them are told at once (a ConfigError at start)."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from schemas import MARKETS
from worker.core.exceptions import ConfigError
from worker.core.policy import ApprovalRule, MarketPolicy, Policy

_LIMITS = ("max_payout", "daily_limit", "beneficiary_daily_limit")
_MARKET_KEYS = (*_LIMITS, "approvals", "currency")
_RULE_KEYS = ("total_over", "payout_over", "approvals")
# More approvers than this is a typo, not a policy.
MAX_APPROVALS = 5


def load_policy(path: str) -> Policy:
    """The policy of the file at ``path``; ConfigError listing every mistake in it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"DISBURSE_POLICY={path}: cannot read it ({exc.strerror})") from None
    return parse_policy(raw, path)


def parse_policy(raw: bytes, source: str) -> Policy:
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"DISBURSE_POLICY={source}: not TOML: {exc}") from None
    mistakes: list[str] = []
    markets: dict[str, MarketPolicy] = {}
    for key in document:
        if key != "markets":
            mistakes.append(f"{key}: unknown key (the file has [markets.<ID>] tables only)")
    tables = document.get("markets", {})
    if not isinstance(tables, dict):
        mistakes.append("markets: must be tables such as [markets.ID]")
        tables = {}
    for market, table in tables.items():
        where = f"markets.{market}"
        if market not in MARKETS:
            mistakes.append(f"{where}: {market!r} is not a market ({', '.join(MARKETS)})")
        elif not isinstance(table, dict):
            mistakes.append(f"{where}: must be a table of {', '.join(_MARKET_KEYS)}")
        else:
            found = _market(market, table, mistakes)
            if found is not None:
                markets[market] = found
    if mistakes:
        lines = "\n".join(f"  {m}" for m in mistakes)
        many = f"{len(mistakes)} mistakes" if len(mistakes) > 1 else "a mistake"
        raise ConfigError(f"DISBURSE_POLICY={source} has {many}:\n{lines}")
    return Policy(markets, hashlib.sha256(raw).hexdigest(), source)


def _market(market: str, table: Mapping[str, Any], mistakes: list[str]) -> MarketPolicy | None:
    where = f"markets.{market}"
    before = len(mistakes)
    currencies = list(MARKETS[market].amount_rules)  # type: ignore[attr-defined]
    for key in table:
        if key not in _MARKET_KEYS:
            expected = ", ".join(_MARKET_KEYS)
            mistakes.append(f"{where}.{key}: unknown key (expected one of {expected})")
    currency = table.get("currency", currencies[0])
    if currency not in currencies:
        mistakes.append(
            f"{where}.currency: {currency!r} is not paid in {market} ({', '.join(currencies)})"
        )
    limits = {key: _amount(table, key, where, mistakes) for key in _LIMITS}
    approvals = _rules(table.get("approvals", []), where, mistakes)
    if len(mistakes) > before:
        return None
    return MarketPolicy(market, str(currency), approvals=approvals, **limits)


def _amount(
    table: Mapping[str, Any], key: str, where: str, mistakes: list[str], *, zero: bool = False
) -> Decimal | None:
    """An amount given as a decimal string ("50000000"): a float would be inexact."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str):
        mistakes.append(f'{where}.{key}: write the amount as a decimal string, e.g. "50000000"')
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        mistakes.append(f"{where}.{key}: {value!r} is not a decimal amount")
        return None
    if not amount.is_finite() or amount < 0 or (amount == 0 and not zero):
        least = "zero or more" if zero else "more than zero"
        mistakes.append(f"{where}.{key}: {value!r} must be {least}")
        return None
    return amount


def _rules(value: object, where: str, mistakes: list[str]) -> tuple[ApprovalRule, ...]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        mistakes.append(
            f'{where}.approvals: must be a list of tables such as {{ total_over = "0", '
            "approvals = 1 }"
        )
        return ()
    rules: list[ApprovalRule] = []
    for i, rule in enumerate(value, start=1):
        at = f"{where}.approvals[{i}]"
        for key in rule:
            if key not in _RULE_KEYS:
                mistakes.append(f"{at}.{key}: unknown key (expected {', '.join(_RULE_KEYS)})")
        total_over = _amount(rule, "total_over", at, mistakes, zero=True)
        payout_over = _amount(rule, "payout_over", at, mistakes, zero=True)
        if "total_over" not in rule and "payout_over" not in rule:
            mistakes.append(f"{at}: says neither total_over nor payout_over")
        count = rule.get("approvals")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_APPROVALS:
            mistakes.append(f"{at}.approvals: must be a whole number from 1 to {MAX_APPROVALS}")
            continue
        rules.append(ApprovalRule(count, total_over, payout_over))
    return tuple(rules)
