"""Webhook signatures: ``Disburse-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">``, made by the sender and checked by the application (:func:`verify_webhook`)."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Disburse-Signature"
TOLERANCE = 300  # seconds a signed request stays acceptable to the application


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    return f"t={timestamp},v1={_digest(body, secret, timestamp)}"


def verify_webhook(
    body: bytes | str,
    header: str | None,
    secret: str,
    tolerance: float = TOLERANCE,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` (``Disburse-Signature``) signs exactly ``body`` (the raw
    request body) with ``secret``, at a time within ``tolerance`` seconds of ``now``.

    The application's side of the webhooks. Compared in constant time; a header with
    several ``v1`` values (while a secret is being rotated) passes when one matches.
    """
    if isinstance(body, str):
        body = body.encode()
    if not header or not secret:
        return False
    timestamp: int | None = None
    given: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            given.append(value)
    if timestamp is None or not given:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _digest(body, secret, timestamp).encode()
    # Every candidate compared, so the time taken does not say which one matched.
    return sum(hmac.compare_digest(value.encode(), expected) for value in given) > 0
