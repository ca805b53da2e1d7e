"""The provider's MD5 signature: canonical string, ``sign`` and constant-time ``verify``.

Rule (PROVIDERS.md): every top-level field except ``sign``, empty values dropped,
sorted by name (ASCII), joined as ``key=value`` with no separator, the app secret
appended, MD5, lowercase hex. The provider stringifies values, so callers send
strings and sign exactly what they send.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

SIGN_FIELD = "sign"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def canonical(fields: Mapping[str, Any]) -> str:
    """The string that is signed: sorted ``key=value`` pairs of the non-empty fields."""
    pairs = (
        (key, _text(value))
        for key, value in fields.items()
        if key != SIGN_FIELD and value is not None and _text(value) != ""
    )
    return "".join(f"{key}={value}" for key, value in sorted(pairs))


def sign(fields: Mapping[str, Any], secret: str) -> str:
    """Lowercase hex MD5 of the canonical string with ``secret`` appended."""
    return hashlib.md5((canonical(fields) + secret).encode("utf-8")).hexdigest()


def verify(fields: Mapping[str, Any], secret: str) -> bool:
    """True when ``fields['sign']`` matches; compared in constant time."""
    given = fields.get(SIGN_FIELD)
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.lower().encode(), sign(fields, secret).encode())
