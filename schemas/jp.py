"""Japan (seed 002): bank transfers in JPY to Katakana-named account holders."""

from __future__ import annotations

from decimal import Decimal

from schemas.fields import (
    AmountRule,
    Digits,
    Katakana,
    Mobile,
    NotifyUrl,
    PayoutSchema,
    Text,
    amount_rules,
)


class JapanSchema(PayoutSchema):
    market = "JP"
    amount_rules = amount_rules(AmountRule("JPY", minimum=Decimal(100)))

    bankCode = Digits(length=4, required=True)
    bankNumber = Digits(required=True)
    userId = Text(required=True)  # the merchant's own beneficiary id, 1-64 characters
    mobile = Mobile(
        "0[0-9]{10}", "must be 11 digits starting with 0, no country code", required=True
    )
    firstname = Katakana(required=True)
    lastname = Katakana(required=True)
    notifyUrl = NotifyUrl(https_only=True, required=True)
