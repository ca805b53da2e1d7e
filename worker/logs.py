"""JSON log lines, one object a line, with account numbers and secrets masked.

Every line carries ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and
``message``, plus ``trade_no`` / ``batch_id`` and any other ``extra={...}`` fields,
and ``exc`` / ``stack`` text when there is one.

Masking (rule 10 of the design: secrets, full account numbers and phone numbers never
appear in logs), applied to every string that goes into the line except the
structural fields (``ts``, ``level``, ``logger``, ``trade_no``, ``batch_id``):

* a run of 6 or more digits standing on its own (not touching a letter or another
  digit, so ids like tradeNo ``39fa354542824ee789faf526f27c024f`` survive) keeps only
  its last 4 digits: ``5464438554636`` -> ``*********4636``. Millisecond timestamps in
  message text are masked too; ``ts`` is separate and never is.
* ``extra`` values (at any depth) whose key looks like a secret (secret, token,
  password, sign, authorization, api key, credential) become ``***``;
* in text, ``key=value`` / ``key: value`` pairs with such keys, and ``Bearer <token>``,
  have their value replaced by ``***``.

Masking is per value, before JSON encoding, so JSON escapes (``\\n123456``) cannot
hide a number from it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

MASK = "***"
_DIGITS = re.compile(r"(?<![A-Za-z0-9])[0-9]{6,}(?![A-Za-z0-9])")
_SECRET_KEY = re.compile(
    r"secret|token|passw|pwd|sign|authori[sz]ation|api[-_]?key|credential|cookie", re.I
)
_SECRET_PAIR = re.compile(
    r"(?P<key>\b[\w-]*(?:secret|token|passw|sign|authori[sz]ation|api[-_]?key)[\w-]*"
    r"[\"']?\s*[:=]\s*[\"']?)(?:(?:Bearer|Basic)\s+)?(?P<value>[^\s\"',;&}]+)",
    re.I,
)
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.I)
# Attributes every LogRecord has: not user extras.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def mask_digits(text: str) -> str:
    """Keep the last 4 of every stand-alone run of 6+ digits."""
    return _DIGITS.sub(lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:], text)


def mask_text(text: str) -> str:
    """Mask secrets in ``key=value`` pairs and bearer tokens, then long digit runs."""
    text = _SECRET_PAIR.sub(lambda m: m.group("key") + MASK, text)
    text = _BEARER.sub(lambda m: m.group("scheme") + " " + MASK, text)
    return mask_digits(text)


def mask_value(value: Any, key: str = "") -> Any:
    """Mask a value for the log line: secrets by key name, text by :func:`mask_text`."""
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        # A number big enough to be an account or phone number is logged as masked text.
        return mask_text(str(value)) if abs(value) >= 100_000 else value
    if isinstance(value, dict):
        return {str(k): mask_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [mask_value(v) for v in value]
    return mask_text(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for fields and masking."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_text(_message(record)),
        }
        for name in ("trade_no", "batch_id"):
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = str(value)
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRS and name not in data and not name.startswith("_"):
                data[name] = mask_value(value, name)
        if record.exc_info:
            data["exc"] = mask_text(self.formatException(record.exc_info))
        elif record.exc_text:
            data["exc"] = mask_text(record.exc_text)
        if record.stack_info:
            data["stack"] = mask_text(self.formatStack(record.stack_info))
        return json.dumps(data, ensure_ascii=False, default=str)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string must not lose the line
        return f"{record.msg!s} {record.args!r}"


def configure_logging(
    level: int | str | None = "INFO", logfile: str | None = None, stream: TextIO | None = None
) -> logging.Handler:
    """Make the root logger write JSON lines (to ``logfile``, else ``stream``/stderr).

    Replaces the root logger's handlers, so it is safe to call more than once.
    Returns the handler it installed.
    """
    handler: logging.Handler
    if logfile:
        handler = logging.FileHandler(logfile, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(level))
    return handler


def _level(level: int | str | None) -> int:
    if level is None or level == "":
        return logging.INFO
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    return value if isinstance(value, int) else logging.INFO
