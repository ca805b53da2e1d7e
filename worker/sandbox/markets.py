"""What each market's payout request must carry (seeds 000/001/002/004), checked lightly.

This is deliberately independent of the application's marshmallow schemas: the
sandbox checks what the provider's pages say, so a schema bug shows up as an 8000.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

MARKETS = ("ID", "AR", "JP", "KH")
MAX_TRADE_NO = 32

_COMMON = ("tradeNo", "timestamp", "amount", "mobile", "email", "notifyUrl")
REQUIRED: dict[str, tuple[str, ...]] = {
    "ID": (*_COMMON, "bankCode", "bankAccountNo", "customerName"),
    "AR": (*_COMMON, "accountNo", "firstname", "lastname"),
    "JP": (*_COMMON, "bankCode", "bankNumber", "userId", "firstname", "lastname"),
    "KH": (
        *_COMMON,
        "channelCode",
        "wayCode",
        "bankCode",
        "bankNumber",
        "firstname",
        "lastname",
    ),
}
CURRENCY = {"ID": "IDR", "AR": "ARS", "JP": "JPY", "KH": "KHR"}
# Without a market prefix in the path, the first of these fields present decides.
_DETECT = (("bankAccountNo", "ID"), ("accountNo", "AR"), ("userId", "JP"), ("channelCode", "KH"))
_AMOUNT = re.compile(r"^\d+(\.\d+)?$")


def detect(prefix: str | None, fields: Mapping[str, str]) -> str | None:
    if prefix:
        return prefix.upper()
    for field, market in _DETECT:
        if fields.get(field):
            return market
    return None


def problems(market: str, fields: Mapping[str, str]) -> list[str]:
    """What is wrong with a payout request for ``market`` (empty when it looks fine)."""
    found: list[str] = []
    missing = [name for name in REQUIRED[market] if not fields.get(name)]
    if (
        market == "KH"
        and fields.get("channelCode") == "EWALLET"
        and fields.get("wayCode") == "LANTON"
        and not fields.get("accountId")
    ):
        missing.append("accountId")
    if missing:
        found.append(f"missing required field(s): {', '.join(missing)}")
    amount = fields.get("amount")
    if amount and not is_positive_amount(amount):
        found.append(f"amount {amount!r} is not a positive number")
    trade_no = fields.get("tradeNo", "")
    if len(trade_no) > MAX_TRADE_NO:
        found.append(f"tradeNo longer than {MAX_TRADE_NO} characters")
    return found


def is_positive_amount(text: str) -> bool:
    if not _AMOUNT.match(text):
        return False
    try:
        return Decimal(text) > 0
    except InvalidOperation:  # pragma: no cover - the pattern already guards it
        return False


def currency(market: str, fields: Mapping[str, str]) -> str:
    given = fields.get("currency")
    if given:
        return given.upper()
    if market == "KH" and "." in fields.get("amount", ""):
        return "USD"
    return CURRENCY[market]


def bank(market: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The beneficiary as the details API shows it."""
    if market == "ID":
        return {
            "code": fields.get("bankCode", ""),
            "account_number": fields.get("bankAccountNo", ""),
            "account_name": fields.get("customerName", ""),
        }
    name = f"{fields.get('firstname', '')} {fields.get('lastname', '')}".strip()
    if market == "AR":
        return {"code": "", "account_number": fields.get("accountNo", ""), "account_name": name}
    return {
        "code": fields.get("bankCode", ""),
        "account_number": fields.get("bankNumber", ""),
        "account_name": name,
    }
