"""The payout row schemas: what each market accepts, what it sends, and what users are told."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import marshmallow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    MARKETS,
    Payout,
    RowError,
    market_code,
    validate_row,
    validate_rows,
)
from worker.core.signing import sign

# One valid row per market, from the seeds' request examples (where those follow the text).
ROWS: dict[str, dict[str, Any]] = {
    "ID": {
        "amount": "100000",
        "bankAccountNo": "5464438554636",
        "bankCode": "0002",
        "customerName": "jack",
        "email": "user@gmail.com",
        "mobile": "6281245907765",
        "notifyUrl": "https://google.com",
        "remark": "remark",
    },
    "AR": {
        "amount": "100",
        "mobile": "0912345678",
        "email": "rizky.pratama@example.com",
        "accountNo": "880123456789012345",
        "firstname": "Rizky",
        "lastname": "Pratama",
        "notifyUrl": "https://api.merchant.com/vexora/collection/notify",
    },
    "JP": {
        "amount": "100",
        "bankCode": "0004",
        "bankNumber": "3560123456789012",
        "userId": "jp_user_123456",
        "mobile": "09123456789",
        "email": "taro.yamada@example.com",
        "firstname": "タロウ",
        "lastname": "ヤマダ",
        "notifyUrl": "https://merchant.example.com/api/vexora/disbursement/notify",
        "remark": "withdrawal-10001",
    },
    "KH": {
        "amount": "50000",
        "currency": "KHR",
        "bankCode": "0004",
        "bankNumber": "88990011",
        "accountId": "lanton_88990011",
        "mobile": "123456789",
        "email": "sophea.chan@example.com",
        "firstname": "Sophea",
        "lastname": "Chan",
        "channelCode": "EWALLET",
        "wayCode": "LANTON",
        "notifyUrl": "https://merchant.example.com/webhooks/vexora/disbursement",
        "remark": "payout_KHPO202605160001",
    },
}

# What is sent for each of ROWS: the provider's field names, every value a string.
EXPECTED_FIELDS: dict[str, dict[str, str]] = {
    "ID": {
        "amount": "100000",
        "bankAccountNo": "5464438554636",
        "bankCode": "0002",
        "customerName": "jack",
        "email": "user@gmail.com",
        "mobile": "6281245907765",
        "notifyUrl": "https://google.com",
        "remark": "remark",
    },
    "AR": {
        "amount": "100",
        "mobile": "0912345678",
        "email": "rizky.pratama@example.com",
        "accountNo": "880123456789012345",
        "firstname": "Rizky",
        "lastname": "Pratama",
        "notifyUrl": "https://api.merchant.com/vexora/collection/notify",
    },
    "JP": {
        "amount": "100",
        "bankCode": "0004",
        "bankNumber": "3560123456789012",
        "userId": "jp_user_123456",
        "mobile": "09123456789",
        "email": "taro.yamada@example.com",
        "firstname": "タロウ",
        "lastname": "ヤマダ",
        "notifyUrl": "https://merchant.example.com/api/vexora/disbursement/notify",
        "remark": "withdrawal-10001",
    },
    "KH": {
        "amount": "50000",
        "bankCode": "0004",
        "bankNumber": "88990011",
        "accountId": "lanton_88990011",
        "mobile": "123456789",
        "email": "sophea.chan@example.com",
        "firstname": "Sophea",
        "lastname": "Chan",
        "channelCode": "EWALLET",
        "wayCode": "LANTON",
        "notifyUrl": "https://merchant.example.com/webhooks/vexora/disbursement",
        "remark": "payout_KHPO202605160001",
    },
}

CURRENCY = {"ID": "IDR", "AR": "ARS", "JP": "JPY", "KH": "KHR"}

REQUIRED: dict[str, tuple[str, ...]] = {
    "ID": (
        "amount",
        "customerName",
        "mobile",
        "email",
        "bankAccountNo",
        "bankCode",
        "notifyUrl",
    ),
    "AR": ("amount", "accountNo", "mobile", "email", "firstname", "lastname", "notifyUrl"),
    "JP": (
        "amount",
        "bankCode",
        "bankNumber",
        "userId",
        "mobile",
        "email",
        "firstname",
        "lastname",
        "notifyUrl",
    ),
    "KH": (
        "amount",
        "currency",
        "firstname",
        "lastname",
        "mobile",
        "email",
        "channelCode",
        "wayCode",
        "bankCode",
        "bankNumber",
        "notifyUrl",
    ),
}


def row(market: str, **changes: Any) -> dict[str, Any]:
    """The market's valid row with some columns changed (``None`` removes a column)."""
    result = dict(ROWS[market])
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def errors_of(market: str, data: Any, **kwargs: Any) -> dict[str, list[str]]:
    with pytest.raises(marshmallow.ValidationError) as info:
        validate_row(market, data, **kwargs)
    messages = info.value.messages
    assert isinstance(messages, dict)
    return messages


def assert_rejected(market: str, data: Any, field: str, text: str, **kwargs: Any) -> None:
    errors = errors_of(market, data, **kwargs)
    assert field in errors, errors
    assert any(text in message for message in errors[field]), errors[field]


# --- the registry -----------------------------------------------------------------------


def test_registry_lists_the_four_markets() -> None:
    assert set(MARKETS) == {"ID", "AR", "JP", "KH"}
    assert all(issubclass(schema, marshmallow.Schema) for schema in MARKETS.values())


# The public error for a bad code (worker.core.exceptions.UnknownMarket, listing the valid
# ones) is the producer's: tests/unit/flows/test_producer.py. This package sits below worker/.
@pytest.mark.parametrize("code", ["XX", "", "IDN", "indonesia", "I D", None, 7])
def test_unknown_market_has_no_code_and_is_refused(code: Any) -> None:
    assert market_code(code) is None
    with pytest.raises(ValueError, match="unknown market"):
        validate_row(code, ROWS["ID"])


def test_unknown_market_is_refused_by_validate_rows_even_without_rows() -> None:
    with pytest.raises(ValueError, match="unknown market"):
        validate_rows("XX", [])


@pytest.mark.parametrize("code", ["id", "Id", " ID ", "iD"])
def test_market_code_is_case_insensitive(code: str) -> None:
    assert market_code(code) == "ID"
    assert validate_row(code, ROWS["ID"]).market == "ID"


# --- valid rows -------------------------------------------------------------------------


@pytest.mark.parametrize("market", sorted(ROWS))
def test_valid_row_sends_exactly_the_expected_fields(market: str) -> None:
    payout = validate_row(market, ROWS[market])
    assert payout == Payout(
        market=market,
        currency=CURRENCY[market],
        amount=Decimal(EXPECTED_FIELDS[market]["amount"]),
        reference=None,
        fields=EXPECTED_FIELDS[market],
    )
    assert all(isinstance(value, str) for value in payout.fields.values())


@pytest.mark.parametrize("market", sorted(ROWS))
def test_schema_classes_load_on_their_own(market: str) -> None:
    loaded = MARKETS[market]().load(ROWS[market])
    assert loaded["currency"] == CURRENCY[market]
    assert loaded["amount"] == Decimal(EXPECTED_FIELDS[market]["amount"])


def test_indonesia_seed_example_signs_to_the_documented_vector() -> None:
    payout = validate_row("ID", row("ID", remark=None))
    body = {
        **payout.fields,
        "tradeNo": "39fa354542824ee789faf526f27c024f",
        "timestamp": "1732985021335",
    }
    assert sign(body, "TEST_SECRET") == "59083b685db195fb3e07cadd11d4b50f"


def test_surrounding_whitespace_is_stripped() -> None:
    padded = {f" {key} ": f"  {value}\t" for key, value in ROWS["ID"].items()}
    assert validate_row("ID", padded).fields == EXPECTED_FIELDS["ID"]


@pytest.mark.parametrize("empty", ["", "   ", None])
@pytest.mark.parametrize("market", sorted(ROWS))
def test_empty_optional_fields_are_omitted(market: str, empty: str | None) -> None:
    payout = validate_row(market, row(market, remark=None) | {"remark": empty, "reference": empty})
    assert "remark" not in payout.fields
    assert payout.reference is None


@pytest.mark.parametrize("market", sorted(ROWS))
def test_reference_is_carried_but_never_sent(market: str) -> None:
    payout = validate_row(market, row(market, reference="order-2024/11:7_a.b"))
    assert payout.reference == "order-2024/11:7_a.b"
    assert "reference" not in payout.fields
    assert "currency" not in payout.fields


@pytest.mark.parametrize(
    "reference",
    ["has space", "x" * 65, "naïve", "a;b", "a\nb", "#1"],
)
def test_bad_reference_is_refused(reference: str) -> None:
    assert_rejected("ID", row("ID", reference=reference), "reference", "1-64 letters, digits")


def test_reference_of_64_characters_is_accepted() -> None:
    assert validate_row("ID", row("ID", reference="r" * 64)).reference == "r" * 64


def test_json_numbers_are_accepted_for_digit_fields() -> None:
    payout = validate_row(
        "ID", row("ID", amount=100000, mobile=6281245907765, bankAccountNo=5464438554636)
    )
    assert payout.fields == EXPECTED_FIELDS["ID"]


def test_huge_json_integers_are_refused_cleanly() -> None:
    assert_rejected("ID", row("ID", mobile=10**5000), "mobile", "Longer than")
    assert_rejected("ID", row("ID", amount=10**5000), "amount", "too large")


@pytest.mark.parametrize("value", [True, 8.5, ["0812"], {"a": 1}])
def test_non_string_values_are_refused(value: Any) -> None:
    assert_rejected("ID", row("ID", mobile=value), "mobile", "Not a valid string")


def test_payout_is_frozen() -> None:
    payout = validate_row("ID", ROWS["ID"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        payout.amount = Decimal(1)  # type: ignore[misc]


# --- columns ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["5464438554636", "", None])
def test_unknown_column_is_an_error_naming_it(value: str | None) -> None:
    errors = errors_of("ID", row("ID") | {"bankAcount": value})
    assert errors["bankAcount"] == ["Unknown field."]


@pytest.mark.parametrize(
    ("market", "field"),
    [(market, field) for market, fields in REQUIRED.items() for field in fields],
)
@pytest.mark.parametrize("how", ["absent", "empty", "blank", "none"])
def test_required_field_missing(market: str, field: str, how: str) -> None:
    data = row(market, **{field: None})
    if how != "absent":
        data[field] = {"empty": "", "blank": "  ", "none": None}[how]
    assert_rejected(market, data, field, "Missing data for required field.")


def test_every_bad_field_is_reported_at_once() -> None:
    data = row("ID", mobile="123", bankCode="2", email="nope", amount="5", customerName=None)
    assert set(errors_of("ID", data)) == {"mobile", "bankCode", "email", "amount", "customerName"}


def test_a_row_that_is_not_a_mapping_is_refused() -> None:
    assert "_schema" in errors_of("ID", ["100000", "jack"])


# --- amounts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "changes", "sent", "amount"),
    [
        ("ID", {"amount": "10000"}, "10000", Decimal(10000)),
        ("ID", {"amount": 100000}, "100000", Decimal(100000)),
        ("ID", {"amount": 100000.0}, "100000", Decimal(100000)),
        ("ID", {"amount": " 250000 "}, "250000", Decimal(250000)),
        ("ID", {"amount": "999999999999"}, "999999999999", Decimal(999999999999)),
        ("ID", {"amount": "0100000"}, "100000", Decimal(100000)),
        ("AR", {"amount": "100.00"}, "100", Decimal(100)),  # the seed's example
        ("AR", {"amount": "12345"}, "12345", Decimal(12345)),
        ("JP", {"amount": "100"}, "100", Decimal(100)),
        ("KH", {"currency": "KHR", "amount": "1"}, "1", Decimal(1)),
        ("KH", {"currency": "USD", "amount": "12.5"}, "12.50", Decimal("12.50")),
        ("KH", {"currency": "USD", "amount": "12"}, "12.00", Decimal("12.00")),
        ("KH", {"currency": "USD", "amount": "0.01"}, "0.01", Decimal("0.01")),
        ("KH", {"currency": "USD", "amount": 12.25}, "12.25", Decimal("12.25")),
        ("KH", {"currency": "USD", "amount": 0.1}, "0.10", Decimal("0.10")),
        ("KH", {"currency": "usd", "amount": "7.05"}, "7.05", Decimal("7.05")),
    ],
)
def test_amount_accepted_and_formatted(
    market: str, changes: dict[str, Any], sent: str, amount: Decimal
) -> None:
    payout = validate_row(market, row(market, **changes))
    assert payout.fields["amount"] == sent
    assert payout.amount == amount
    assert format(payout.amount, "f") == sent


@pytest.mark.parametrize(
    ("market", "changes", "message"),
    [
        ("ID", {"amount": "100000.5"}, "'100000.5' has 1 decimal; IDR allows none"),
        ("ID", {"amount": 100000.5}, "'100000.5' has 1 decimal; IDR allows none"),
        ("ID", {"amount": "9999"}, "at least 10000 IDR"),
        ("AR", {"amount": "99"}, "at least 100 ARS"),
        ("AR", {"amount": "100.50"}, "ARS amounts must be whole numbers"),
        ("JP", {"amount": "99"}, "at least 100 JPY"),
        ("JP", {"amount": "100.1"}, "'100.1' has 1 decimal; JPY allows none"),
        ("KH", {"currency": "KHR", "amount": "1.5"}, "'1.5' has 1 decimal; KHR allows none"),
        ("KH", {"currency": "USD", "amount": "12.345"}, "'12.345' has 3 decimals; USD allows 2"),
        ("KH", {"currency": "USD", "amount": "0.001"}, "'0.001' has 3 decimals; USD allows 2."),
        ("ID", {"amount": "0"}, "greater than 0"),
        ("KH", {"currency": "USD", "amount": "0.00"}, "greater than 0"),
        ("ID", {"amount": "-100000"}, "greater than 0"),
        ("ID", {"amount": -100000}, "greater than 0"),
        ("ID", {"amount": "1000000000000"}, "too large"),
        ("ID", {"amount": 1e20}, "too large"),
        ("ID", {"amount": "abc"}, "Not a valid amount"),
        ("ID", {"amount": "1e5"}, "Not a valid amount"),
        ("ID", {"amount": "100,000"}, "Not a valid amount"),
        ("ID", {"amount": "100 000"}, "Not a valid amount"),
        ("ID", {"amount": "+100000"}, "Not a valid amount"),
        ("ID", {"amount": "100000."}, "Not a valid amount"),
        ("ID", {"amount": ".5"}, "Not a valid amount"),
        ("ID", {"amount": "Rp100000"}, "Not a valid amount"),
        ("ID", {"amount": "NaN"}, "Not a valid amount"),
        ("ID", {"amount": "Infinity"}, "Not a valid amount"),
        ("ID", {"amount": float("nan")}, "Not a valid amount"),
        ("ID", {"amount": float("inf")}, "Not a valid amount"),
        ("ID", {"amount": True}, "Not a valid amount"),
        ("ID", {"amount": "\u0661" + "\u0660" * 5}, "Not a valid amount"),  # Arabic-Indic digits
        ("ID", {"amount": "1" * 50}, "Not a valid amount"),
    ],
)
def test_amount_refused(market: str, changes: dict[str, Any], message: str) -> None:
    assert_rejected(market, row(market, **changes), "amount", message)


# A locale that writes "." for thousands (es-AR, de, id) means 150,000 by "150.000": an
# amount with more decimals than its currency allows is an error, even when they are zeros.
@pytest.mark.parametrize(
    ("market", "changes", "message"),
    [
        (
            "AR",
            {"amount": "150.000"},
            "'150.000' has 3 decimals; ARS allows 2. If '.' separates thousands here, "
            "write 150000.",
        ),
        (
            "ID",
            {"amount": "100.000"},
            "'100.000' has 3 decimals; IDR allows none (whole numbers only). "
            "If '.' separates thousands here, write 100000.",
        ),
        (
            "JP",
            {"amount": "5.000"},
            "'5.000' has 3 decimals; JPY allows none (whole numbers only). "
            "If '.' separates thousands here, write 5000.",
        ),
        (
            "KH",
            {"currency": "KHR", "amount": "5.000"},
            "'5.000' has 3 decimals; KHR allows none (whole numbers only). "
            "If '.' separates thousands here, write 5000.",
        ),
        (
            "KH",
            {"currency": "USD", "amount": "1.500"},
            "'1.500' has 3 decimals; USD allows 2. If '.' separates thousands here, write 1500.",
        ),
        ("ID", {"amount": "100000.00"}, "'100000.00' has 2 decimals; IDR allows none"),
        ("ID", {"amount": Decimal("100000.00")}, "'100000.00' has 2 decimals; IDR allows none"),
        ("JP", {"amount": "1000000.0"}, "'1000000.0' has 1 decimal; JPY allows none"),
        ("KH", {"currency": "USD", "amount": "12.500"}, "'12.500' has 3 decimals; USD allows 2"),
        ("AR", {"amount": "100.000"}, "'100.000' has 3 decimals; ARS allows 2"),
        (
            "AR",
            {"amount": "1.500.000"},
            "Not a valid amount: no thousands separators. If '.' separates thousands here, "
            "write 1500000.",
        ),
    ],
)
def test_an_amount_with_more_decimals_than_its_currency_allows_is_refused(
    market: str, changes: dict[str, Any], message: str
) -> None:
    (found,) = errors_of(market, row(market, **changes))["amount"]
    assert found.startswith(message), found


def test_an_argentine_semicolon_file_with_thousands_dots_is_refused_not_read_as_pesos() -> None:
    from worker.core.rows import parse_rows

    header = ";".join(ROWS["AR"])
    cells = ";".join("150.000" if k == "amount" else str(v) for k, v in ROWS["AR"].items())
    rows, parse_errors = parse_rows(f"{header}\n{cells}\n".encode(), "csv")
    assert parse_errors == []
    valid, errors = validate_rows("AR", rows)
    assert valid == []
    assert errors == [
        RowError(
            2,
            {
                "amount": [
                    "'150.000' has 3 decimals; ARS allows 2. "
                    "If '.' separates thousands here, write 150000."
                ]
            },
        )
    ]


@pytest.mark.parametrize(
    ("market", "changes", "sent"),
    [
        ("AR", {"amount": "150000"}, "150000"),
        ("AR", {"amount": "150.00"}, "150"),  # two zero decimals, as the seed's example
        ("ID", {"amount": "100000"}, "100000"),
        ("JP", {"amount": "5000"}, "5000"),
        ("KH", {"currency": "KHR", "amount": "5000"}, "5000"),
        ("KH", {"currency": "USD", "amount": "1.50"}, "1.50"),
        ("KH", {"currency": "USD", "amount": Decimal("12.5")}, "12.50"),
    ],
)
def test_an_amount_within_its_currency_decimals_is_sent_with_the_same_value(
    market: str, changes: dict[str, Any], sent: str
) -> None:
    payout = validate_row(market, row(market, **changes))
    assert payout.fields["amount"] == sent
    assert Decimal(sent) == Decimal(str(changes["amount"]))


def test_an_amount_is_never_rounded_to_fit_its_currency() -> None:
    from decimal import Inexact

    from schemas.fields import AmountRule

    usd = AmountRule("USD", places=2)
    assert usd.normalize(Decimal("12.5")) == Decimal("12.50")
    with pytest.raises(Inexact):
        usd.normalize(Decimal("12.345"))
    with pytest.raises(Inexact):
        AmountRule("ARS", written=2).normalize(Decimal("100.50"))


# --- currency ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "given", "currency"),
    [("ID", "IDR", "IDR"), ("ID", "idr", "IDR"), ("AR", "ARS", "ARS"), ("JP", "JPY", "JPY")],
)
def test_single_currency_markets_accept_their_currency(
    market: str, given: str, currency: str
) -> None:
    payout = validate_row(market, row(market, currency=given))
    assert payout.currency == currency
    assert "currency" not in payout.fields


@pytest.mark.parametrize(
    ("market", "given", "field", "message"),
    [
        ("ID", "USD", "currency", "Must be IDR for market ID"),
        ("AR", "USD", "currency", "Must be ARS for market AR"),
        ("JP", "IDR", "currency", "Must be JPY for market JP"),
        ("KH", "EUR", "currency", "Must be KHR or USD for market KH"),
        ("KH", "US$", "currency", "Not a valid currency code"),
        ("ID", "rupiah", "currency", "Not a valid currency code"),
    ],
)
def test_wrong_currency_refused(market: str, given: str, field: str, message: str) -> None:
    assert_rejected(market, row(market, currency=given), field, message)


def test_cambodia_requires_a_currency() -> None:
    assert_rejected("KH", row("KH", currency=None), "currency", "Missing data")
    assert_rejected("KH", row("KH", currency=""), "currency", "Missing data")


def test_cambodia_usd_payout() -> None:
    payout = validate_row("KH", row("KH", currency="USD", amount="12.5"))
    assert payout.currency == "USD"
    assert payout.fields == EXPECTED_FIELDS["KH"] | {"amount": "12.50"}


# --- mobile numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "mobile"),
    [
        ("ID", "0812345678"),  # 10 digits
        ("ID", "0812345678901"),  # 13 digits
        ("ID", "6281245907765"),
        ("ID", "6281234567"),  # 10 digits
        ("AR", "0912345678"),
        ("AR", "0112345678"),
        ("JP", "09123456789"),
        ("JP", "08012345678"),
        ("KH", "12345678"),
        ("KH", "123456789"),
        ("KH", "012345678"),
    ],
)
def test_mobile_accepted(market: str, mobile: str) -> None:
    assert validate_row(market, row(market, mobile=mobile)).fields["mobile"] == mobile


@pytest.mark.parametrize(
    ("market", "mobile", "message"),
    [
        ("ID", "081234567", "start with 08 or 628 and have 10-13 digits"),  # 9 digits
        ("ID", "08123456789012", "start with 08 or 628 and have 10-13 digits"),  # 14
        ("ID", "+6281245907765", "start with 08 or 628"),
        ("ID", "7281245907765", "start with 08 or 628"),
        ("ID", "0712345678", "start with 08 or 628"),
        ("ID", "0812-3456-789", "start with 08 or 628"),
        ("AR", "081234567890", "10 digits starting with 0"),  # the seed's example
        ("AR", "912345678", "10 digits starting with 0"),
        ("AR", "1912345678", "10 digits starting with 0"),
        ("AR", "+540912345678", "10 digits starting with 0"),
        ("JP", "9123456789", "11 digits starting with 0"),
        ("JP", "819123456789", "11 digits starting with 0"),
        ("JP", "091234567890", "11 digits starting with 0"),
        ("JP", "\uff10\uff19" + "\uff11" * 9, "11 digits starting with 0"),  # full-width digits
        ("KH", "1234567", "8-9 digits"),
        ("KH", "1234567890", "8-9 digits"),
        ("KH", "+85512345678", "8-9 digits"),
        ("KH", "12 345 678", "8-9 digits"),
    ],
)
def test_mobile_refused(market: str, mobile: str, message: str) -> None:
    assert_rejected(market, row(market, mobile=mobile), "mobile", message)


# --- bank fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "field", "value", "message"),
    [
        ("ID", "bankCode", "002", "exactly 4 digits"),
        ("ID", "bankCode", "00002", "exactly 4 digits"),
        ("ID", "bankCode", "BCA1", "exactly 4 digits"),
        ("JP", "bankCode", "4", "exactly 4 digits"),
        ("ID", "bankAccountNo", "5464-4385", "digits only"),
        ("ID", "bankAccountNo", "١٢٣٤", "digits only"),
        ("ID", "bankAccountNo", "1" * 35, "Longer than 34"),
        ("AR", "accountNo", "AR8801234", "digits only"),
        ("JP", "bankNumber", "3560 1234", "digits only"),
        ("KH", "bankNumber", "8899O011", "digits only"),
        ("KH", "bankCode", "00 04", "letters, digits, _ or -"),
        ("KH", "channelCode", "ewallet", "upper-case code"),
        ("KH", "wayCode", "LAN TON", "upper-case code"),
        ("KH", "wayCode", "LANTON!", "upper-case code"),
    ],
)
def test_bank_field_refused(market: str, field: str, value: str, message: str) -> None:
    assert_rejected(market, row(market, **{field: value}), field, message)


def test_leading_zeros_of_codes_and_accounts_are_kept() -> None:
    fields = validate_row("ID", row("ID", bankCode="0002", bankAccountNo="000123")).fields
    assert (fields["bankCode"], fields["bankAccountNo"]) == ("0002", "000123")


# --- names and free text ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "field"),
    [("ID", "customerName"), ("AR", "firstname"), ("AR", "lastname"), ("KH", "firstname")],
)
@pytest.mark.parametrize("name", ["Jo", "Anne-Marie O'Neil", "Nguyễn Văn A", "x" * 64])
def test_name_accepted(market: str, field: str, name: str) -> None:
    assert validate_row(market, row(market, **{field: name})).fields[field] == name


@pytest.mark.parametrize(
    ("market", "field"),
    [("ID", "customerName"), ("AR", "lastname"), ("KH", "lastname"), ("JP", "userId")],
)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x" * 65, "Longer than 64 characters"),
        ("Jack\x00", "control characters"),
        ("Ja\nck", "control characters"),
        ("Ja\x1bck", "control characters"),
        ("Ja\u2028ck", "control characters"),
    ],
)
def test_name_refused(market: str, field: str, value: str, message: str) -> None:
    assert_rejected(market, row(market, **{field: value}), field, message)


def test_remark_up_to_128_characters() -> None:
    assert validate_row("ID", row("ID", remark="r" * 128)).fields["remark"] == "r" * 128
    assert_rejected("ID", row("ID", remark="r" * 129), "remark", "Longer than 128 characters")
    assert_rejected("ID", row("ID", remark="a\tb"), "remark", "control characters")


@pytest.mark.parametrize(
    "email",
    ["nope", "user@", "@example.com", "user@@example.com", "us er@example.com", "example.com"],
)
def test_email_refused(email: str) -> None:
    # Also at a domain an address passed with before (the domain is not checked again).
    validate_row("AR", row("AR", email="first@example.com"))
    assert_rejected("AR", row("AR", email=email), "email", "Not a valid email address")
    assert_rejected("AR", row("AR", email=email + ".x"), "email", "Not a valid email address")


# --- Katakana (Japan) -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ヤマダ", "タロー", "ヴァ", "ヤマダ・タロウ", "ーア"])
def test_katakana_accepted(name: str) -> None:
    payout = validate_row("JP", row("JP", firstname=name, lastname=name))
    assert payout.fields["firstname"] == payout.fields["lastname"] == name


@pytest.mark.parametrize(
    "name",
    [
        "やまだ",  # Hiragana
        "Yamada",  # Latin
        "山田",  # Kanji
        "ﾔﾏﾀﾞ",  # half-width Katakana
        "ヤマダ タロウ",  # space
        "ヤマダ　タロウ",  # full-width space
        "・ヤマダ",  # middle dot not between names
        "ヤマダ・",
        "ヤマダ1",
    ],
)
@pytest.mark.parametrize("field", ["firstname", "lastname"])
def test_katakana_refused(field: str, name: str) -> None:
    assert_rejected("JP", row("JP", **{field: name}), field, "full-width Katakana")


def test_katakana_name_of_65_characters_is_refused() -> None:
    assert_rejected("JP", row("JP", lastname="ア" * 65), "lastname", "Longer than 64 characters")


# --- notifyUrl --------------------------------------------------------------------------


@pytest.mark.parametrize("market", ["JP", "KH"])
def test_https_only_markets_refuse_http_notify_url(market: str) -> None:
    data = row(market, notifyUrl="http://merchant.example.com/notify")
    assert_rejected(market, data, "notifyUrl", "https://")


@pytest.mark.parametrize("market", ["ID", "AR"])
def test_other_markets_accept_http_notify_url(market: str) -> None:
    url = "http://merchant.example.com/notify"
    assert validate_row(market, row(market, notifyUrl=url)).fields["notifyUrl"] == url


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8701/notify",
        "https://localhost/notify",
        "https://receiver:8701/notify",
        "https://merchant.example.com/a/b?c=d",
    ],
)
def test_notify_url_accepted(url: str) -> None:
    assert validate_row("JP", row("JP", notifyUrl=url)).fields["notifyUrl"] == url


@pytest.mark.parametrize(
    "url",
    ["merchant.example.com/notify", "ftp://example.com/x", "https://", "https://exa mple.com/"],
)
def test_notify_url_refused(url: str) -> None:
    assert_rejected("ID", row("ID", notifyUrl=url), "notifyUrl", "Not a valid http")


@pytest.mark.parametrize("market", sorted(ROWS))
@pytest.mark.parametrize("given", [None, "", "  "])
def test_notify_url_default_applies_when_the_row_has_none(market: str, given: str | None) -> None:
    data = row(market, notifyUrl=None)
    if given is not None:
        data["notifyUrl"] = given
    payout = validate_row(market, data, notify_url="https://hooks.example.com/vexora")
    assert payout.fields["notifyUrl"] == "https://hooks.example.com/vexora"


@pytest.mark.parametrize(
    ("own", "default"),
    [
        ("https://hooks.example.com/other/path?x=1", "https://hooks.example.com/vexora"),
        ("https://HOOKS.example.com:443/a", "https://hooks.example.com/vexora"),
        ("https://hooks.example.com:8443/a", "https://hooks.example.com:8443/vexora"),
        ("https://hooks.example.com/a", "http://hooks.example.com/vexora"),  # http -> https
        ("http://127.0.0.1:8701/a", "http://127.0.0.1:8701/notify"),
    ],
)
def test_a_row_notify_url_on_the_notify_url_host_wins_over_the_default(
    own: str, default: str
) -> None:
    payout = validate_row("ID", row("ID", notifyUrl=own), notify_url=default)
    assert payout.fields["notifyUrl"] == own


@pytest.mark.parametrize(
    "own",
    [
        "https://google.com",
        "https://hooks.example.com.evil.example/vexora",
        "https://evil.example/hooks.example.com",
        "https://hooks.example.com@evil.example/vexora",
        "https://hooks.example.com:8443/vexora",  # another port: another listener
        "http://hooks.example.com/vexora",  # https -> http: not the receiver's scheme
        "https://sub.hooks.example.com/vexora",
    ],
)
def test_a_row_notify_url_on_another_host_is_a_row_error(own: str) -> None:
    """A row may not send its payout's outcome (and the provider's signature on it)
    anywhere but to this system's receiver."""
    default = "https://hooks.example.com/vexora"
    errors = errors_of("ID", row("ID", notifyUrl=own), notify_url=default)
    assert errors == {
        "notifyUrl": [
            "Must be on the host of the NOTIFY_URL setting (https://hooks.example.com): "
            "the provider posts the payout's outcome there."
        ]
    }


def test_a_foreign_notify_url_is_reported_with_the_row_other_errors() -> None:
    rows = [
        (1, row("ID", notifyUrl="https://evil.example/n", mobile="12", reference="r-1")),
        (2, row("ID", notifyUrl="https://evil.example/n", reference="r-1")),
        (3, row("ID", notifyUrl="not a url")),
    ]
    valid, errors = validate_rows("ID", rows, notify_url="https://hooks.example.com/")
    assert valid == []
    assert [error.row for error in errors] == [1, 2, 3]
    assert set(errors[0].errors) == {"mobile", "notifyUrl"}
    assert set(errors[1].errors) == {"notifyUrl", "reference"}  # r-1 seen in row 1
    assert errors[2].errors == {"notifyUrl": ["Not a valid http:// or https:// URL."]}


def test_without_a_default_a_row_notify_url_is_not_limited() -> None:
    assert validate_row("ID", ROWS["ID"]).fields["notifyUrl"] == "https://google.com"


def test_http_default_notify_url_is_refused_where_https_is_required() -> None:
    data = row("JP", notifyUrl=None)
    assert_rejected("JP", data, "notifyUrl", "https://", notify_url="http://hooks.example.com/")


# --- Cambodia: Lanton wallet ------------------------------------------------------------


@pytest.mark.parametrize("account", [None, "", "   "])
def test_lanton_wallet_requires_account_id(account: str | None) -> None:
    data = row("KH", accountId=None)
    if account is not None:
        data["accountId"] = account
    assert_rejected("KH", data, "accountId", "Required when channelCode is EWALLET")


def test_account_id_is_optional_for_other_channels() -> None:
    data = row("KH", accountId=None, channelCode="BANK", wayCode="ACLEDA")
    payout = validate_row("KH", data)
    assert "accountId" not in payout.fields
    assert payout.fields["channelCode"] == "BANK"


def test_invalid_account_id_is_reported_once() -> None:
    errors = errors_of("KH", row("KH", accountId="x" * 65))
    assert errors["accountId"] == ["Longer than 64 characters."]


# --- batches ----------------------------------------------------------------------------


def test_validate_rows_reports_every_bad_row_and_keeps_the_good_ones() -> None:
    rows = [
        (2, ROWS["ID"]),
        (3, row("ID", amount="100000.5")),
        (4, row("ID", reference="inv-4")),
        (5, row("ID", mobile="12", bankAcount="1")),
        (6, row("ID", notifyUrl=None)),
    ]
    # The sample rows' own notifyUrl is on the default's host.
    valid, errors = validate_rows("id", iter(rows), notify_url="https://google.com/hooks")
    assert [number for number, _ in valid] == [2, 4, 6]
    assert valid[1][1].reference == "inv-4"
    assert valid[2][1].fields["notifyUrl"] == "https://google.com/hooks"
    assert [error.row for error in errors] == [3, 5]
    assert errors[0] == RowError(
        3, {"amount": ["'100000.5' has 1 decimal; IDR allows none (whole numbers only)."]}
    )
    assert set(errors[1].errors) == {"mobile", "bankAcount"}
    assert errors[1].errors["bankAcount"] == ["Unknown field."]
    assert all(
        isinstance(message, str)
        for error in errors
        for messages in error.errors.values()
        for message in messages
    )


def test_validate_rows_without_notify_url_reports_it_missing() -> None:
    valid, errors = validate_rows("ID", [(1, row("ID", notifyUrl=None))])
    assert valid == []
    assert errors == [RowError(1, {"notifyUrl": ["Missing data for required field."]})]


def test_validate_rows_of_nothing() -> None:
    assert validate_rows("KH", []) == ([], [])


# --- properties -------------------------------------------------------------------------


@given(st.integers(min_value=10_000, max_value=10**12 - 1))
def test_any_whole_idr_amount_round_trips_to_its_integer_string(amount: int) -> None:
    payout = validate_row("ID", row("ID", amount=str(amount)))
    assert payout.fields["amount"] == str(amount)
    assert payout.amount == amount


@given(st.integers(min_value=10_000, max_value=10**12 - 1), st.integers(min_value=1, max_value=6))
def test_a_whole_idr_amount_written_with_zero_decimals_is_refused_not_truncated(
    amount: int, zeros: int
) -> None:
    written = f"{amount}.{'0' * zeros}"
    assert_rejected("ID", row("ID", amount=written), "amount", f"'{written}' has {zeros} decimal")


# (market, currency, decimals an amount may be written with)
_DECIMALS = [
    ("ID", "IDR", 0),
    ("AR", "ARS", 2),
    ("JP", "JPY", 0),
    ("KH", "KHR", 0),
    ("KH", "USD", 2),
]


@given(
    st.sampled_from(_DECIMALS),
    st.integers(min_value=1, max_value=10**11),
    st.text(alphabet="0123456789", max_size=6),
)
@settings(max_examples=300)
def test_an_amount_is_sent_with_its_exact_value_or_refused_never_rounded(
    rule: tuple[str, str, int], whole: int, fraction: str
) -> None:
    market, currency, allowed = rule
    written = f"{whole}.{fraction}" if fraction else str(whole)
    try:
        payout = validate_row(market, row(market, currency=currency, amount=written))
    except marshmallow.ValidationError as exc:
        assert isinstance(exc.messages, dict)
        if len(fraction) > allowed:
            assert f"has {len(fraction)} decimal" in exc.messages["amount"][0]
        return
    assert len(fraction) <= allowed
    assert Decimal(payout.fields["amount"]) == Decimal(written)
    assert payout.amount == Decimal(written)


@given(st.integers(min_value=1, max_value=10**12 - 1), st.integers(min_value=0, max_value=99))
def test_any_usd_amount_with_cents_is_sent_with_two_places(whole: int, cents: int) -> None:
    payout = validate_row("KH", row("KH", currency="USD", amount=f"{whole}.{cents:02d}"))
    assert payout.fields["amount"] == f"{whole}.{cents:02d}"
    assert Decimal(payout.fields["amount"]) == payout.amount


@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.booleans()))
@settings(max_examples=300)
def test_arbitrary_mobile_never_raises_anything_but_validation_error(value: Any) -> None:
    for market in ROWS:
        try:
            payout = validate_row(market, row(market, mobile=value))
        except marshmallow.ValidationError as exc:
            assert set(exc.messages) == {"mobile"}
        else:
            assert payout.fields["mobile"].isascii()
            assert payout.fields["mobile"].isdigit()


@given(st.one_of(st.text(max_size=50), st.integers(), st.floats(), st.decimals()))
@settings(max_examples=300)
def test_arbitrary_amount_is_refused_or_exact(value: Any) -> None:
    try:
        payout = validate_row("KH", row("KH", currency="USD", amount=value))
    except marshmallow.ValidationError as exc:
        assert set(exc.messages) == {"amount"}
    else:
        assert Decimal(0) < payout.amount < Decimal(10**12)
        assert payout.fields["amount"] == format(payout.amount, "f")
        assert payout.amount.as_tuple().exponent == -2


_COLUMN_VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=20),
    st.integers(min_value=-(10**14), max_value=10**14),
    st.sampled_from(["EWALLET", "LANTON", "USD", "KHR", "IDR", "0002", "12.5", "100000"]),
)


@given(
    st.sampled_from(sorted(ROWS)),
    st.dictionaries(
        st.sampled_from(
            [
                "amount",
                "currency",
                "mobile",
                "bankCode",
                "accountId",
                "channelCode",
                "wayCode",
                "firstname",
                "notifyUrl",
                "reference",
                "remark",
                "extra",
            ]
        ),
        _COLUMN_VALUES,
        max_size=4,
    ),
)
@settings(max_examples=400)
def test_fast_path_agrees_with_marshmallow_load(market: str, changes: dict[str, Any]) -> None:
    """``load_row`` (used by validate_row) must give exactly what ``load`` gives."""
    data = ROWS[market] | changes
    schema = MARKETS[market]()
    try:
        expected = schema.load(data)
    except marshmallow.ValidationError as exc:
        with pytest.raises(marshmallow.ValidationError) as info:
            schema.load_row(data)  # type: ignore[attr-defined]
        assert info.value.messages == exc.messages
    else:
        assert schema.load_row(data) == expected  # type: ignore[attr-defined]
