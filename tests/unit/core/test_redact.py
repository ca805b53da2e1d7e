"""The one masking rule (worker.core.redact): the cases the two old rules covered (logs'
stand-alone 6+ digit runs and secrets; the provider-text rule's 7+ digit runs anywhere,
cut to 300 characters), and the cases where they disagreed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from worker.core.redact import MASK, mask_digits, mask_personal, mask_text, mask_value, redact

TRADE_NO = "39fa354542824ee789faf526f27c024f"
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


# --- digit runs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("5464438554636", "*********4636"),
        ("123456", "**3456"),
        ("12345", "12345"),  # short runs stay: bank codes, years, statuses
        ("1732985021335", "*********1335"),  # ms timestamps in text too
        ("bank 0002, 100000 IDR", "bank 0002, **0000 IDR"),
        ("+6281245907765", "+*********7765"),
        ("card 4111111111111111", "card ************1111"),
    ],
)
def test_long_digit_runs_keep_their_last_four(text: str, masked: str) -> None:
    assert mask_digits(text) == masked
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # Logs' old rule left a run touching a letter alone; the provider-text rule masked
        # it. An account number with a prefix must not leak: masked.
        ("ACC5464438554636", "ACC*********4636"),
        ("x5464438554636", "x*********4636"),
        ("5464438554636x", "*********4636x"),
        ("msisdn6281245907765", "msisdn*********7765"),
        # Our own ids are masked in free text too (they have fields of their own).
        # Six digits: logs' old rule masked them, the provider-text rule (7+) did not.
        ("account 123456 invalid", "account **3456 invalid"),
        # Digits of any script: the provider-text rule's \d masked them, logs' [0-9] did not.
        ("5464438554636".translate(FULL_WIDTH), "*********" + "4636".translate(FULL_WIDTH)),
    ],
)
def test_where_the_old_rules_disagreed_the_stricter_wins(text: str, masked: str) -> None:
    assert mask_text(text) == masked
    assert redact(text) == masked


# --- secrets ----------------------------------------------------------------------------


def test_secrets_in_text_are_masked() -> None:
    assert mask_text("sign=59083b685db195fb3e07cadd11d4b50f&x=1") == "sign=***&x=1"
    assert mask_text('{"app_secret": "TEST_SECRET"}') == '{"app_secret": "***"}'
    assert mask_text("Authorization: Bearer eyJ.abc.def") == "Authorization: ***"
    assert "eyJ" not in mask_text("sent Bearer eyJ.abc.def upstream")
    assert mask_text("Basic Y2xpZW50OnNlY3JldA==") == "Basic ***"
    assert mask_text("password: hunter2; pwd=hunter3") == "password: ***; pwd=***"
    assert mask_text("Cookie: session=abc123") == "Cookie: ***"
    assert mask_text("token refresh failed") == "token refresh failed"  # no value: no mask


def test_the_password_of_a_url_is_masked() -> None:
    assert mask_text("at postgresql://payouts:pw@db:5432/ledger") == (
        "at postgresql://payouts:***@db:5432/ledger"
    )
    assert mask_text("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_text("postgresql://u:p@ss%40@db/x") == "postgresql://u:***@db/x"  # to the last @
    assert mask_text("host=db password=pw dbname=x") == "host=db password=*** dbname=x"
    unchanged = ["postgresql://payouts@db:5432/ledger", "https://example.com:8443/a@b"]
    assert [mask_text(text) for text in unchanged] == unchanged


def test_provider_text_gets_the_secret_rule_too() -> None:
    # The old provider-text rule masked digits only: an echoed signature went through.
    echoed = 'bad {"sign": "59083b685db195fb3e07cadd11d4b50f", "bankAccountNo": "5464438554636"}'
    text = redact(echoed)
    assert "59083b685db1" not in text and "5464438554636" not in text
    assert '"sign": "***"' in text and "*********4636" in text


# --- provider text: length ---------------------------------------------------------------


def test_provider_text_is_cut_after_masking() -> None:
    assert redact("x" * 300) == "x" * 300
    assert redact("x" * 301) == "x" * 299 + "…"
    # A number straddling the cut: masked first, so its head never shows.
    text = redact("y" * 290 + "5464438554636", limit=300)
    assert len(text) == 300 and "54644" not in text and text.endswith("*********…")
    assert redact(None) == "None"
    assert redact(12345678) == "****5678"


# --- structured values ---------------------------------------------------------------------


def test_values_are_masked_by_key_and_by_content() -> None:
    masked = mask_value(
        {
            "app_secret": "TEST_SECRET",
            "access_token": "eyJhbGciOi",
            "credentials": {"user": "u"},
            "headers": {"Authorization": "Bearer abc.def", "X-PARTNER-ID": "p-1"},
            "fields": {"bankAccountNo": "5464438554636", "bankCode": "0002"},
            "account": 5464438554636,
            "amount": Decimal("100000.50"),
            "attempt": 2,
            "ok": True,
            "none": None,
            "mobiles": ("6281245907765",),
            "empty_token": "",
        }
    )
    assert masked == {
        "app_secret": MASK,
        "access_token": MASK,
        "credentials": MASK,
        "headers": {"Authorization": MASK, "X-PARTNER-ID": "p-1"},
        "fields": {"bankAccountNo": "*********4636", "bankCode": "0002"},
        "account": "*********4636",
        "amount": "**0000.50",
        "attempt": 2,
        "ok": True,
        "none": None,
        "mobiles": ["*********7765"],
        "empty_token": "",
    }


@pytest.mark.parametrize(
    "text",
    [
        "ACC5464438554636 sign=abc Bearer eyJ.x",
        "Authorization: Bearer eyJ.abc.def",
        "card 4111111111111111",
        "postgresql://u:p@ss@db/x and redis://:pw@h",
        TRADE_NO,
    ],
)
def test_masking_is_idempotent(text: str) -> None:
    once = mask_text(text)
    assert mask_text(once) == once
    assert redact(redact(text)) == redact(text)


def test_a_payouts_personal_fields_are_masked_for_display() -> None:
    fields = {
        "amount": "100000",
        "bankCode": "0002",
        "bankAccountNo": "5464438554636",
        "mobile": "6281245907765",
        "customerName": "Jack Smith",
        "email": "jack.smith@example.com",
        "userId": "u-77",
        "notifyUrl": "https://payouts.example.com/notify",
    }
    masked = mask_personal(fields)
    assert masked == {
        "amount": "100000",
        "bankCode": "0002",
        "bankAccountNo": "*********4636",
        "mobile": "*********7765",
        "customerName": "J***",
        "email": "j***@example.com",
        "userId": "u***",
        "notifyUrl": "https://payouts.example.com/notify",
    }
    shown = " ".join(masked.values())
    for secret in ("5464438554636", "6281245907765", "Jack", "Smith", "jack.smith"):
        assert secret not in shown


@pytest.mark.parametrize(
    "number",
    [
        "12345",
        "123456",
        "0812345678901",
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667",  # Arabic-Indic
        "12345\uff16\uff17\uff18",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "00000000000000000000",
    ],
)
def test_a_number_alone_is_masked_as_in_any_text(number: str) -> None:
    """Digits only (of any script) take a shortcut in mask_personal: the same result."""
    masked = mask_personal({"bankAccountNo": number})["bankAccountNo"]
    expected = mask_digits(number) if len(number) >= 6 else f"{number[:1]}{MASK}"
    assert masked == expected
    assert number not in masked or len(number) < 5


@pytest.mark.parametrize(
    "text",
    [
        TRADE_NO,
        "b3f2a1c0d9e8f7a6",  # a batch id
        "0f8fad5b-d9cb-469f-a165-70867728950e",  # a task id
        f"tradeNo={TRADE_NO},",
    ],
)
def test_our_own_ids_stay_whole(text: str) -> None:
    assert mask_text(text) == text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("12345678901234567890123456789012", "****************************9012"),  # no letter
        (f"ACC{TRADE_NO}", "ACC39fa*****2824ee789faf526f27c024f"),  # not standing alone
        ("acct 5464438554636 for b3f2a1c0d9e8f7a6", "acct *********4636 for b3f2a1c0d9e8f7a6"),
    ],
)
def test_only_a_whole_id_is_exempt(text: str, masked: str) -> None:
    assert mask_text(text) == masked
