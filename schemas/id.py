"""Indonesia (seed 000): bank transfers in IDR."""

from __future__ import annotations

from decimal import Decimal

from schemas.fields import AmountRule, Digits, Mobile, Name, PayoutSchema, amount_rules


class IndonesiaSchema(PayoutSchema):
    market = "ID"
    # The seed types amount as float but every example is whole rupiah; decimals are refused.
    amount_rules = amount_rules(AmountRule("IDR", minimum=Decimal(10_000)))

    customerName = Name(required=True)
    mobile = Mobile(
        "(?:08[0-9]{8,11}|628[0-9]{7,10})",
        "must start with 08 or 628 and have 10-13 digits",
        required=True,
    )
    bankAccountNo = Digits(required=True)
    bankCode = Digits(length=4, required=True)  # e.g. 0002
