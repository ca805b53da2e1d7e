"""The provider's vocabulary as its documents state it: codes, statuses, the MD5 signature.

Written from PROVIDERS.md and the seeds (/work/shared/seeds/), never imported from
the client (``worker.provider.answers``, ``worker.core.signing``): the sandbox is the
other side of the wire, so a wrong code or a wrong signing rule in the client shows up as a
disagreement in the tests that run the client against the sandbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

# --- the payout API (seeds 000/001/002/004) ---------------------------------------------

MERCHANT_HEADER = "merchantNo"
SIGN_FIELD = "sign"

# Top-level ``code``: whether the request was accepted, never the payout's state.
ACCEPTED = "0000"
CODE_SYSTEM_ERROR = "5000"  # independent integrations: system error, retry later
CODE_REQUEST_FAILED = "8000"  # independent integrations: request failed
# The pages document no other code; these are this sandbox's choices (the client
# has to recognise them, and the tests running it against the sandbox check it does).
CODE_BAD_SIGN = "4001"
CODE_UNKNOWN_MERCHANT = "4002"
CODE_ORDER_NOT_FOUND = "4004"  # the default answer to a query of an unknown tradeNo
CODE_DUPLICATE_TRADE_NO = "4005"  # the default answer to a repeated tradeNo
CODE_RATE_LIMITED = "429"  # in the body of an HTTP 429

# ``data.status``: the payout's state (PROVIDERS.md's table; 0001 is collections only).
STATUS_SUCCEEDED = "0000"
STATUS_PROCESSING = "0015"
STATUS_FAILED = "00029"

# ``data.message`` (``data.desc`` in ID) of each status, as the pages' examples show.
STATUS_MESSAGES: Mapping[str, str] = {
    STATUS_PROCESSING: "Processing",
    STATUS_SUCCEEDED: "SUCCESS",
    STATUS_FAILED: "REJECTED_TRANSACTION",
}

# --- the disbursement-details API (seed 003) --------------------------------------------

DETAILS_PENDING = "pending"
DETAILS_SUCCESS = "success"
DETAILS_FAILED = "failed"
DETAILS_STATUSES: Mapping[str, str] = {
    STATUS_PROCESSING: DETAILS_PENDING,
    STATUS_SUCCEEDED: DETAILS_SUCCESS,
    STATUS_FAILED: DETAILS_FAILED,
}

# --- signing ----------------------------------------------------------------------------


def _as_text(value: Any) -> str:
    """A value as the provider stringifies it: strings as they are, anything else as its
    JSON text (``100000``, ``true``)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def sign_text(body: Mapping[str, Any]) -> str:
    """Every field but ``sign`` with a non-empty value, sorted by name, as ``key=value``."""
    pairs = sorted(
        (key, _as_text(value))
        for key, value in body.items()
        if key != SIGN_FIELD and value is not None
    )
    return "".join(f"{key}={text}" for key, text in pairs if text)


def sign(body: Mapping[str, Any], secret: str) -> str:
    """MD5 of :func:`sign_text` with the app secret appended, in lowercase hex."""
    return hashlib.md5((sign_text(body) + secret).encode("utf-8")).hexdigest()


def verify(body: Mapping[str, Any], secret: str) -> bool:
    """Whether ``body['sign']`` is the signature of ``body`` (in any letter case)."""
    given = body.get(SIGN_FIELD)
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.lower().encode("utf-8"), sign(body, secret).encode())
