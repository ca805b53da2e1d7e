"""Cambodia (seed 004): bank and wallet transfers in KHR or USD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.fields import (
    AmountRule,
    Code,
    Currency,
    Digits,
    Mobile,
    Name,
    NotifyUrl,
    PayoutSchema,
    Text,
    amount_rules,
)


class CambodiaSchema(PayoutSchema):
    market = "KH"
    # No minimum is documented: anything above zero.
    amount_rules = amount_rules(AmountRule("KHR"), AmountRule("USD", places=2))

    currency = Currency(required=True)  # two currencies, so the row must say which
    firstname = Name(required=True)
    lastname = Name(required=True)
    mobile = Mobile("[0-9]{8,9}", "must be 8-9 digits, no country code", required=True)
    channelCode = Code(required=True)  # EWALLET for the Lanton wallet
    wayCode = Code(required=True)  # LANTON for the Lanton wallet
    # The bank-code appendix is not public: any short code of letters, digits, _ or -.
    bankCode = Text(
        max_length=32,
        pattern="[A-Za-z0-9_-]+",
        error="Must be letters, digits, _ or - (e.g. 0004).",
        required=True,
    )
    bankNumber = Digits(required=True)
    accountId = Text(  # checked in row_errors
        metadata={
            "description": "the user's Lanton app account id; required when channelCode "
            "is EWALLET and wayCode is LANTON"
        }
    )
    notifyUrl = NotifyUrl(https_only=True, required=True)

    def row_errors(self, data: dict[str, Any], row: Mapping[str, Any]) -> dict[str, list[str]]:
        errors = super().row_errors(data, row)
        lanton = data.get("channelCode") == "EWALLET" and data.get("wayCode") == "LANTON"
        if lanton and "accountId" not in row:
            errors["accountId"] = ["Required when channelCode is EWALLET and wayCode is LANTON."]
        return errors
