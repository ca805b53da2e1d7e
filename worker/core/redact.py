"""The one masking rule for logs, error messages and exports (DESIGN.md rule 10).

Secrets, full account numbers and phone numbers never leave the process in text we
write. :func:`mask_text` applies the rule to a string:

* ``key=value`` / ``key: value`` pairs (also quoted, as in JSON) whose key looks like
  a secret (secret, token, password, sign, authorization, api key, credential,
  cookie), ``Bearer``/``Basic`` credentials, and the password of a URL
  (``postgresql://user:***@host/db``, ``redis://:***@host``) have their value
  replaced by ``***``;
* every run of 6 or more digits (of any script) keeps only its last 4, the others
  become ``*``: ``5464438554636`` -> ``*********4636``. This holds wherever the run
  stands, also glued to letters (``ACC5464438554636`` -> ``ACC*********4636``):
  account numbers and mobiles arrive with prefixes (``ACC``, ``msisdn``, IBAN country
  letters), and nothing in a string tells such a prefix from an id. The exceptions are
  the ids this system makes itself, which carry no personal data and which operators
  search logs for: a tradeNo (32 lowercase hex characters, at least one a letter), a
  batch id (``b`` and 15 hex) and a task id (a dashed UUID), standing alone, are left
  whole. Short runs (bank codes, years, HTTP statuses) stay readable.

:func:`mask_value` applies it to structured values (a log line's ``extra`` fields):
values under a secret-looking key become ``***`` whatever they are, and numbers big
enough to be an account or phone number are masked as text. :func:`redact` is the rule
for text a provider sends us (messages, echoed requests): masked, then cut to a length
fit for an error message.

The rule is idempotent: masked text masks to itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "mask_digits", "mask_text", "mask_value", "redact"]

MASK = "***"
# What a key that holds a secret contains (case-insensitive): by name, in structured
# values and in ``key=value`` text alike.
_SENSITIVE_NAMES = r"secret|token|passw|pwd|sign|authori[sz]ation|api[-_]?key|credential|cookie"
_SECRET_KEY = re.compile(_SENSITIVE_NAMES, re.I)
_SECRET_PAIR = re.compile(
    rf"(?P<key>\b[\w-]*(?:{_SENSITIVE_NAMES})[\w-]*[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:Bearer|Basic)\s+)?(?P<value>[^\s\"',;&}]+)",
    re.I,
)
_CREDENTIALS = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.I)
# scheme://user:password@host: the password ends at the last "@" before the host.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s/]*@", re.I)
# Our own ids (left whole) or a run of 6+ digits (masked): one pass, ids first.
_DIGITS = re.compile(
    r"(?<![0-9A-Za-z])(?P<id>(?=[0-9]*[a-f])[0-9a-f]{32}|b[0-9a-f]{15}"
    r"|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})(?![0-9A-Za-z])"
    r"|(?P<digits>\d{6,})"
)
_LONG_RUN = re.compile(r"\d{6,}")
# Provider text in an error message: enough to diagnose, not a whole echoed request.
MAX_PROVIDER_TEXT = 300


def mask_digits(text: str) -> str:
    """Keep the last 4 of every run of 6+ digits, wherever it stands, but in our own ids."""
    return _DIGITS.sub(_mask_run, text)


def _mask_run(match: re.Match[str]) -> str:
    run = match.group("digits")
    return match.group() if run is None else "*" * (len(run) - 4) + run[-4:]


def mask_text(text: str) -> str:
    """Mask secrets in ``key=value`` pairs, credentials and URLs, then long digit runs."""
    text = _SECRET_PAIR.sub(lambda m: m.group("key") + MASK, text)
    text = _CREDENTIALS.sub(lambda m: m.group("scheme") + " " + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    return mask_digits(text)


def mask_value(value: Any, key: str = "") -> Any:
    """``value`` masked for output: secrets by ``key`` name, text by :func:`mask_text`.

    Dicts, lists, tuples and sets are masked item by item (a dict's keys name their
    values); booleans, None and small numbers stay as they are.
    """
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        # A number big enough to be an account or phone number is masked as text.
        return mask_text(str(value)) if abs(value) >= 100_000 else value
    if isinstance(value, dict):
        return {str(k): mask_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [mask_value(v) for v in value]
    return mask_text(str(value))


def redact(text: Any, limit: int = MAX_PROVIDER_TEXT) -> str:
    """Provider-supplied text made safe for messages, logs and the ledger.

    Providers sometimes echo the request back in their error messages: the text is
    masked by :func:`mask_text`, then cut to ``limit`` characters (masking first, so
    a cut can never leave the head of a number unmasked).
    """
    value = mask_text(str(text))
    return value if len(value) <= limit else value[: limit - 1] + "…"


# A payout's fields that say nothing about the person paid.
_NOT_PERSONAL = frozenset({"amount", "currency", "bankCode", "channelCode", "wayCode", "notifyUrl"})


def mask_personal(fields: Mapping[str, str]) -> dict[str, str]:
    """A payout's fields for display, kept after its payload is erased.

    Account and phone numbers keep their last 4 digits (:func:`mask_digits`); every
    other personal value (names, emails, user ids) keeps its first character only, and
    an email its domain. Amount, currency and the bank or channel codes stay as they are.
    """
    masked: dict[str, str] = {}
    for key, value in fields.items():
        if key in _NOT_PERSONAL:
            masked[key] = value
        elif len(value) >= 6 and value.isdecimal():
            # Only digits, as most account and phone numbers are: what mask_digits makes
            # of them (\d is what isdecimal() accepts), without its pattern.
            masked[key] = "*" * (len(value) - 4) + value[-4:]
        elif _LONG_RUN.search(value):
            masked[key] = mask_digits(value)
        elif "@" in value:
            local, _, domain = value.rpartition("@")
            masked[key] = f"{local[:1]}{MASK}@{domain}"
        else:
            masked[key] = f"{value[:1]}{MASK}" if value else value
    return masked
