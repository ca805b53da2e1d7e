"""Shared field types and the base schema every market's payout schema extends.

Rows come from CSV (every value a string, empty cells ``""``) or JSON Lines (values
may be numbers). The base schema trims every string, treats ``""`` and ``None`` as
missing, and rejects columns it does not know. Each field turns a raw value into
exactly the string that is sent to the provider (and signed), except ``amount``,
which becomes a ``Decimal`` checked against the market's :class:`AmountRule`.

Everything here is built once at import time: the compiled patterns, the field
objects and (in ``schemas/__init__.py``) one instance of each schema, reused for
every row. The fields check values in their own ``_deserialize`` instead of a
chain of marshmallow validators, which keeps a 100,000-row batch cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation
from functools import cached_property
from typing import Any, ClassVar

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    missing,
    post_load,
    pre_load,
    validates_schema,
)
from marshmallow import fields as mfields
from marshmallow import validate as mvalidate

# C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Strings only: an exponent ("1e5"), a sign other than "-", separators ("1,000") or
# non-ASCII digits are refused rather than guessed at.
_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_AMOUNT_MAX_CHARS = 40
# "1.500.000": thousands grouped with dots, as es-AR, de or id write them.
_GROUPED = re.compile(r"[1-9][0-9]{0,2}(?:\.[0-9]{3}){2,}")
# Full-width Katakana letters U+30A1..U+30FA and the prolonged sound mark U+30FC (ー);
# the middle dot U+30FB (・) only between two runs of letters.
_KATAKANA = "[\u30a1-\u30fa\u30fc]+"
KATAKANA_PATTERN = f"{_KATAKANA}(?:\u30fb{_KATAKANA})*"


class Text(mfields.Field[str]):
    """A trimmed string, at most ``max_length`` characters, optionally matching ``pattern``.

    JSON integers are accepted as their decimal digits (``12345`` -> ``"12345"``); other
    non-strings are refused. Without a pattern, control characters are refused.
    """

    default_error_messages = {
        "invalid": "Not a valid string.",
        "too_long": "Longer than {max_length} characters.",
        "control": "Must not contain control characters.",
        "pattern": "Invalid value.",
    }

    def __init__(
        self,
        *,
        max_length: int = 64,
        pattern: str | None = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.pattern = re.compile(pattern) if pattern is not None else None
        if error is not None:
            self.error_messages["pattern"] = error

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if isinstance(value, str):
            text = value
        elif isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > 4 * self.max_length:  # (str() of a huge int raises)
                raise self.make_error("too_long", max_length=self.max_length)
            text = str(value)
        else:
            raise self.make_error("invalid")
        if self.pattern is not None:
            if self.pattern.fullmatch(text) is None:
                raise self.make_error("pattern")
        elif _CONTROL.search(text) is not None:
            raise self.make_error("control")
        if len(text) > self.max_length:
            raise self.make_error("too_long", max_length=self.max_length)
        return self._check(text)

    def _check(self, text: str) -> str:
        """Further checks for subclasses; returns the string to send."""
        return text


class Name(Text):
    """A person's name: 1-64 characters, no control characters."""


class Remark(Text):
    """The merchant's free-text remark, returned by the provider as-is: up to 128 characters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=128, **kwargs)


class Digits(Text):
    """ASCII digits only; exactly ``length`` of them, or 1 to ``max_length``."""

    def __init__(self, *, length: int | None = None, max_length: int = 34, **kwargs: Any) -> None:
        if length is not None:
            pattern, error = f"[0-9]{{{length}}}", f"Must be exactly {length} digits."
        else:
            pattern, error = "[0-9]+", "Must contain digits only."
        super().__init__(max_length=length or max_length, pattern=pattern, error=error, **kwargs)


class Mobile(Text):
    """A mobile number in the market's national format: ``pattern`` over ASCII digits."""

    def __init__(self, pattern: str, rule: str, **kwargs: Any) -> None:
        error = f"Not a valid mobile number: {rule}."
        super().__init__(max_length=32, pattern=pattern, error=error, **kwargs)


class Katakana(Text):
    """A name in full-width Katakana (ー allowed, ・ between names), 1-64 characters."""

    def __init__(self, **kwargs: Any) -> None:
        error = (
            "Must be full-width Katakana (e.g. ヤマダ): no Latin, Hiragana, Kanji or half-width."
        )
        super().__init__(pattern=KATAKANA_PATTERN, error=error, **kwargs)


class Code(Text):
    """An upper-case provider code such as ``EWALLET``: letters, digits and ``_``."""

    def __init__(self, **kwargs: Any) -> None:
        error = "Must be an upper-case code of letters, digits or _ (e.g. EWALLET)."
        super().__init__(max_length=32, pattern="[A-Z0-9_]+", error=error, **kwargs)


class Reference(Text):
    """The application's idempotency key: 1-64 letters, digits or ``- _ . : /``. Never sent."""

    def __init__(self, **kwargs: Any) -> None:
        error = "Must be 1-64 letters, digits or - _ . : / characters."
        super().__init__(pattern="[A-Za-z0-9_.:/-]{1,64}", error=error, **kwargs)


class Email(Text):
    """An e-mail address in the standard format (marshmallow's validator), at most 254 chars."""

    _validator = mvalidate.Email(error="Not a valid email address.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=254, **kwargs)
        self._domains: set[str] = set()  # domains of addresses found valid

    def _check(self, text: str) -> str:
        # A batch's addresses share a few domains: one at a domain that passed before
        # needs only its local part checked (with the validator's own pattern).
        user, at, domain = text.rpartition("@")
        if at and domain in self._domains and self._validator.USER_REGEX.match(user):
            return text
        self._validator(text)
        if len(self._domains) < 1024:
            self._domains.add(domain)
        return text


class NotifyUrl(Text):
    """The webhook URL: an absolute http(s) URL, or https only when ``https_only``."""

    default_error_messages = {
        "url": "Not a valid http:// or https:// URL.",
        "https": "Must be an https:// URL: this market only notifies over HTTPS.",
    }
    # Hosts without a dot are allowed: internal names and 127.0.0.1 in tests.
    _validator = mvalidate.URL(schemes={"http", "https"}, require_tld=False)

    def __init__(self, *, https_only: bool = False, **kwargs: Any) -> None:
        super().__init__(max_length=2048, **kwargs)
        self.https_only = https_only
        self._valid: set[str] = set()

    def _check(self, text: str) -> str:
        if self.https_only and text.partition(":")[0].lower() == "http":
            raise self.make_error("https")
        if text not in self._valid:  # a batch usually repeats one URL: check it once
            try:
                self._validator(text)
            except ValidationError:
                raise self.make_error("url") from None
            if len(self._valid) < 1024:
                self._valid.add(text)
        return text


class Currency(Text):
    """A currency code, upper-cased; the schema checks it against the market's currencies."""

    def __init__(self, **kwargs: Any) -> None:
        error = "Not a valid currency code (three letters, e.g. USD)."
        super().__init__(max_length=3, pattern="[A-Za-z]{3}", error=error, **kwargs)

    def _check(self, text: str) -> str:
        return text.upper()


class Amount(mfields.Field[Decimal]):
    """A positive, finite amount as an exact ``Decimal``.

    Strings must be plain decimals (``"100000"``, ``"12.50"``) and keep the decimals they
    are written with (the rule counts them). JSON integers are exact; JSON floats are read
    through their shortest ``repr`` (``0.1`` -> ``Decimal("0.1")``), never through the
    binary value. The market's rule (whole numbers or cents, minimum)
    is applied by the schema, because in Cambodia it depends on the row's currency.
    """

    default_error_messages = {
        "invalid": "Not a valid amount: use digits and an optional decimal point, e.g. 100000.",
        "grouped": "Not a valid amount: no thousands separators. If '.' separates "
        "thousands here, write {digits}.",
        "positive": "Amount must be greater than 0.",
        "too_large": "Amount is too large: at most {digits} digits before the decimal point.",
    }

    def __init__(self, *, max_integer_digits: int = 12, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_integer_digits = max_integer_digits
        self.limit = Decimal(10) ** max_integer_digits

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Decimal:
        if isinstance(value, str):
            if len(value) > _AMOUNT_MAX_CHARS or _AMOUNT.fullmatch(value) is None:
                if _GROUPED.fullmatch(value):
                    raise self.make_error("grouped", digits=value.replace(".", ""))
                raise self.make_error("invalid")
            amount = Decimal(value)  # keeps the decimals as written: "150.000" has 3
        elif isinstance(value, bool):
            raise self.make_error("invalid")
        elif isinstance(value, int | Decimal):
            amount = Decimal(value)
        elif isinstance(value, float):
            # A float has no written decimals: a whole one is a whole number (100000.0),
            # any other reads as its shortest repr (0.1 -> 0.1).
            amount = Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
        else:
            raise self.make_error("invalid")
        if not amount.is_finite():
            raise self.make_error("invalid")
        if amount <= 0:
            raise self.make_error("positive")
        if amount >= self.limit:
            raise self.make_error("too_large", digits=self.max_integer_digits)
        return amount


@dataclass(frozen=True, slots=True)
class AmountRule:
    """How one currency's amounts are checked and formatted in one market.

    An amount written with more decimals than the currency allows is refused, even when
    the extra digits are zeros: ``150.000`` is 150 to Python but 150,000 to an es-AR,
    de or id spreadsheet, and ``;``-separated files come from exactly those locales. No
    amount is ever rounded or cut to fit.
    """

    currency: str
    places: int = 0  # 0: whole numbers only, sent as "100000"; 2: sent as "12.50"
    minimum: Decimal | None = None  # inclusive; None: anything above zero
    # The most decimals an amount may be written with (None: ``places``); those past
    # ``places`` must be zeros and are not sent (ARS: the seed's example writes "100.00").
    written: int | None = None
    quantum: Decimal = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantum", Decimal(1).scaleb(-self.places))

    @property
    def allowed(self) -> int:
        """The most decimals an amount may be written with."""
        return self.places if self.written is None else self.written

    def error(self, amount: Decimal) -> str | None:
        """The message for an amount this rule refuses, or None."""
        decimals = _decimals(amount)
        if decimals > self.allowed:
            return self._too_many_decimals(amount, decimals)
        if amount.quantize(self.quantum) != amount:  # exact here: at most ``allowed`` decimals
            if self.places == 0:
                return f"{self.currency} amounts must be whole numbers."
            return f"{self.currency} amounts allow at most {self.places} decimal places."
        if self.minimum is not None and amount < self.minimum:
            return f"Amount must be at least {self.minimum} {self.currency}."
        return None

    def _too_many_decimals(self, amount: Decimal, decimals: int) -> str:
        text = format(amount, "f")
        whole, _, fraction = text.partition(".")
        allows = str(self.allowed) if self.allowed else "none (whole numbers only)"
        message = (
            f"'{text}' has {decimals} decimal{'s' if decimals > 1 else ''}; "
            f"{self.currency} allows {allows}."
        )
        if len(fraction) == 3 and len(whole) <= 3 and not whole.startswith(("0", "-")):
            # 1-3 digits, a dot, 3 digits: how es-AR, de or id write a thousands group.
            return f"{message} If '.' separates thousands here, write {whole}{fraction}."
        return message

    def normalize(self, amount: Decimal) -> Decimal:
        """The amount with exactly ``places`` decimals: ``format(result, "f")`` is what is
        sent. Only zeros are added or dropped: an amount that would change raises."""
        return amount.quantize(self.quantum, context=_EXACT)


# Quantizing under this context raises (decimal.Inexact) instead of rounding.
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])


def _decimals(amount: Decimal) -> int:
    """How many digits the amount was written with after its decimal point."""
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


class PayoutSchema(Schema):
    """Fields every market shares, the row clean-up and the amount/currency rules.

    ``load`` (and its fast twin :meth:`load_row`) returns a dict: ``amount`` (a
    ``Decimal`` with the currency's number of decimals), ``currency`` (always set),
    ``reference`` (if given) and the provider's fields as strings, empty optional ones
    left out. Rules that involve more than one field go in :meth:`row_errors`.
    """

    market: ClassVar[str]
    amount_rules: ClassVar[Mapping[str, AmountRule]]  # currency -> rule; the first is default

    class Meta:
        unknown = RAISE  # a misspelt column is an error, never silently dropped

    amount = Amount(required=True)
    currency = Currency()  # optional where the market has a single currency; never sent
    reference = Reference()  # the application's idempotency key; never sent
    email = Email(required=True)
    notifyUrl = NotifyUrl(required=True)  # field names are the provider's, camelCase
    remark = Remark()

    def clean(self, row: Mapping[Any, Any]) -> dict[str, Any]:
        """Trim keys and strings; drop empty values of known fields (unknown ones stay, to be
        refused by name)."""
        known = self.load_fields
        cleaned: dict[str, Any] = {}
        for key, value in row.items():
            name = key.strip() if isinstance(key, str) else str(key)
            if isinstance(value, str):
                value = value.strip()
                if not value:
                    value = None
            if value is None and name in known:
                continue
            cleaned[name] = value
        return cleaned

    def row_errors(self, data: dict[str, Any], row: Mapping[str, Any]) -> dict[str, list[str]]:
        """Rules across fields, given the fields that passed (``data``) and the cleaned row.

        Currency and amount are checked here because in Cambodia one decides the other.
        Subclasses add their own rules to the result of ``super().row_errors``.
        """
        errors: dict[str, list[str]] = {}
        currency = data.get("currency")
        if currency is None:
            if "currency" in row:
                return errors  # given but invalid: reported by the field
            if self.fields["currency"].required:
                return errors  # reported as missing
            currency = next(iter(self.amount_rules))
        rule = self.amount_rules.get(currency)
        if rule is None:
            codes = " or ".join(self.amount_rules)
            errors["currency"] = [f"Must be {codes} for market {self.market}."]
            return errors
        amount = data.get("amount")
        if amount is not None:
            message = rule.error(amount)
            if message is not None:
                errors["amount"] = [message]
        return errors

    def finish(self, data: dict[str, Any]) -> dict[str, Any]:
        """Fill in the default currency and give the amount the currency's decimals."""
        currency = data.setdefault("currency", next(iter(self.amount_rules)))
        data["amount"] = self.amount_rules[currency].normalize(data["amount"])
        return data

    # marshmallow's hooks, used by load():

    @pre_load
    def _clean(self, row: Any, **_: Any) -> Any:
        if not isinstance(row, Mapping):
            return row  # marshmallow reports "Invalid input type."
        return self.clean(row)

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _check_row(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        if not isinstance(original, Mapping):
            return
        errors = self.row_errors(data, self.clean(original))
        if errors:
            raise ValidationError(errors)

    @post_load
    def _finish(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return self.finish(data)

    @cached_property
    def _parsers(self) -> tuple[tuple[str, bool, Callable[..., Any]], ...]:
        """Per field: its name, whether it is required, and the cheapest call that turns a
        present value into the loaded one. For a value that is present and not None,
        ``deserialize`` only adds validators and per-field hooks around ``_deserialize``,
        and our fields have none, so ``_deserialize`` is called directly where possible."""
        parsers = []
        for name, field_obj in self.load_fields.items():
            plain = not (field_obj.validators or field_obj.pre_load or field_obj.post_load)
            parse = field_obj._deserialize if plain else field_obj.deserialize
            parsers.append((name, field_obj.required, parse))
        return tuple(parsers)

    def load_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``load(row)``, about three times faster for valid rows.

        marshmallow's ``load`` spends most of its time on bookkeeping (error stores,
        per-field closures, hook dispatch). A valid row, the common case, takes this
        direct route through the same cleaning, fields and rules; at the first problem
        the row goes through ``load`` instead, which raises the complete error report.
        """
        if isinstance(row, Mapping):
            cleaned = self.clean(row)
            data: dict[str, Any] = {}
            try:
                for name, required, parse in self._parsers:
                    value = cleaned.get(name, missing)
                    if value is missing:
                        if required:
                            break
                        continue
                    data[name] = parse(value, name, cleaned)
                else:
                    if cleaned.keys() <= self.load_fields.keys() and not self.row_errors(
                        data, cleaned
                    ):
                        return self.finish(data)
            except ValidationError:
                pass
        result: dict[str, Any] = self.load(row)
        return result


def amount_rules(*rules: AmountRule) -> dict[str, AmountRule]:
    """The per-currency rules of a market, keyed by currency code (the first is the default)."""
    return {rule.currency: rule for rule in rules}
