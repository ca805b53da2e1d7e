"""Property tests of the provider's signature (PROVIDERS.md): canonical string, sign, verify.

Rule: every top-level field except ``sign``, empty values dropped, sorted by name,
``key=value`` joined with no separator, the app secret appended, MD5, lowercase hex.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from worker.core.signing import SIGN_FIELD, canonical, sign, verify

SECRET = "TEST_SECRET"
PROPS = settings(max_examples=200, deadline=None)

keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
).filter(lambda k: k != SIGN_FIELD)
non_empty = st.text(min_size=1, max_size=24)
values = st.one_of(non_empty, st.integers(), st.booleans())
bodies = st.dictionaries(keys, values, min_size=1, max_size=10)
secrets_ = st.text(min_size=1, max_size=32)


def as_sent(value: Any) -> str:
    """How the provider stringifies a value before it checks the sign."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_the_documented_vector() -> None:
    fields = {
        "amount": "100000",
        "bankAccountNo": "5464438554636",
        "bankCode": "0002",
        "customerName": "jack",
        "email": "user@gmail.com",
        "mobile": "6281245907765",
        "notifyUrl": "https://google.com",
        "timestamp": "1732985021335",
        "tradeNo": "39fa354542824ee789faf526f27c024f",
    }
    assert sign(fields, SECRET) == "59083b685db195fb3e07cadd11d4b50f"


@PROPS
@given(bodies, secrets_)
def test_sign_is_md5_of_sorted_pairs_plus_secret_in_lowercase_hex(
    fields: dict[str, Any], secret: str
) -> None:
    text = "".join(f"{k}={as_sent(v)}" for k, v in sorted(fields.items()))
    assert canonical(fields) == text
    signature = sign(fields, secret)
    assert signature == hashlib.md5((text + secret).encode("utf-8")).hexdigest()
    assert len(signature) == 32 and signature == signature.lower()


@PROPS
@given(bodies, st.randoms(use_true_random=False))
def test_field_order_is_irrelevant(fields: dict[str, Any], rng: random.Random) -> None:
    items = list(fields.items())
    rng.shuffle(items)
    assert sign(dict(items), SECRET) == sign(fields, SECRET)


@PROPS
@given(bodies, st.dictionaries(keys, st.sampled_from(["", None]), max_size=4), st.text())
def test_empty_values_and_sign_are_left_out(
    fields: dict[str, Any], empties: dict[str, Any], old_sign: str
) -> None:
    with_extras = {**empties, **fields, SIGN_FIELD: old_sign}
    assert canonical(with_extras) == canonical(fields)
    assert sign(with_extras, SECRET) == sign(fields, SECRET)


@PROPS
@given(bodies)
def test_numbers_and_booleans_sign_as_the_strings_the_provider_sees(
    fields: dict[str, Any],
) -> None:
    as_strings = {k: as_sent(v) for k, v in fields.items()}
    assert sign(fields, SECRET) == sign(as_strings, SECRET)


@PROPS
@given(bodies, st.data())
def test_any_changed_value_changes_the_sign(fields: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(fields)))
    new = data.draw(st.one_of(values, st.just("")))
    assume(as_sent(new) != as_sent(fields[key]))
    assert sign({**fields, key: new}, SECRET) != sign(fields, SECRET)


@PROPS
@given(bodies, secrets_, secrets_)
def test_another_secret_gives_another_sign(fields: dict[str, Any], one: str, two: str) -> None:
    assume(one != two)
    assert sign(fields, one) != sign(fields, two)


@PROPS
@given(bodies, secrets_, st.booleans())
def test_verify_accepts_what_sign_produced(
    fields: dict[str, Any], secret: str, upper: bool
) -> None:
    signature = sign(fields, secret)
    assert verify({**fields, SIGN_FIELD: signature.upper() if upper else signature}, secret)


@PROPS
@given(bodies, secrets_, st.data())
def test_verify_refuses_any_tampering(
    fields: dict[str, Any], secret: str, data: st.DataObject
) -> None:
    body = {**fields, SIGN_FIELD: sign(fields, secret)}
    how = data.draw(st.sampled_from(["change", "add", "drop", "secret", "sign", "no sign"]))
    tampered = dict(body)
    other_secret = secret
    if how == "change":
        key = data.draw(st.sampled_from(sorted(fields)))
        new = data.draw(values)
        assume(as_sent(new) != as_sent(fields[key]))
        tampered[key] = new
    elif how == "add":
        key = data.draw(keys)
        assume(key not in fields)
        tampered[key] = data.draw(values)
    elif how == "drop":
        del tampered[data.draw(st.sampled_from(sorted(fields)))]
    elif how == "secret":
        other_secret = data.draw(secrets_)
        assume(other_secret != secret)
    elif how == "sign":
        forged = data.draw(st.one_of(st.text(max_size=40), st.sampled_from(["", "0" * 32])))
        assume(forged.lower() != body[SIGN_FIELD])
        tampered[SIGN_FIELD] = forged
    else:
        tampered[SIGN_FIELD] = data.draw(st.one_of(st.none(), st.integers(), st.just("")))
        if data.draw(st.booleans()):
            del tampered[SIGN_FIELD]
    assert not verify(tampered, other_secret)
