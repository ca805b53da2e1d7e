"""JSON log lines, one object a line, with account numbers and secrets masked.

Every line carries ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and
``message``, plus ``trade_no`` / ``batch_id`` and any other ``extra={...}`` fields,
and ``exc`` / ``stack`` text when there is one.

Every string that goes into the line is masked by :mod:`worker.core.redact` (secrets,
account and phone numbers), except the structural fields (``ts``, ``level``,
``logger``, ``trade_no``, ``batch_id``); ``extra`` values are masked by their key
too. Masking is per value, before JSON encoding, so JSON escapes (``\\n123456``)
cannot hide a number from it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from worker.core.redact import mask_text, mask_value

# Attributes every LogRecord has: not user extras.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


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
