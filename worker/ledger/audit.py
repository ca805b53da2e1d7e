"""The audit trail: one append-only ``audit_events`` row per operator action (who, what,
which batch or payout, when, from where, the note). The table refuses UPDATE, DELETE and
TRUNCATE (migration 0012), so a row once written stays as it was."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from worker.core.redact import mask_text
from worker.ledger.queries import Queries


class Action(StrEnum):
    """What an operator did."""

    ENQUEUE = "enqueue"
    APPROVE = "approve"
    OVERRIDE_LIMIT = "override_limit"
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    RESOLVE = "resolve"
    RETRY = "retry"
    REDELIVER = "redeliver"
    POLICY_LOADED = "policy_loaded"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    who: str
    action: str
    origin: str
    batch_id: str | None = None
    trade_no: str | None = None
    note: str | None = None
    facts: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "who": self.who,
            "action": self.action,
            "batch_id": self.batch_id,
            "trade_no": self.trade_no,
            "origin": self.origin,
            "note": self.note,
            "facts": self.facts,
        }


_SELECT = """
SELECT id, at, who, action, origin, batch_id, trade_no, note, facts FROM audit_events
WHERE id > %(after)s AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(batch)s::text IS NULL OR batch_id = %(batch)s)
ORDER BY id LIMIT %(limit)s
"""


class Audit(Queries):
    """Operator actions written and read."""

    def audit(
        self,
        action: Action,
        who: str,
        origin: str,
        *,
        batch_id: str | None = None,
        trade_no: str | None = None,
        note: str | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        """Append one row. A note is an operator's words: masked like any free text."""
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO audit_events (who, action, origin, batch_id, trade_no, note, facts) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    who,
                    str(action),
                    origin,
                    batch_id,
                    trade_no,
                    mask_text(note) if note else None,
                    Jsonb(facts, dumps=lambda v: orjson.dumps(v).decode()) if facts else None,
                ),
            )

    def audit_events(
        self,
        *,
        since: datetime | None = None,
        batch_id: str | None = None,
        after: int = 0,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """The rows since a time, of a batch, after an id; oldest first, at most ``limit``."""
        with self._connection() as conn:
            rows = conn.execute(
                _SELECT,
                {"after": after, "since": since, "batch": batch_id, "limit": limit},
            ).fetchall()
        return [AuditEvent(*row) for row in rows]

    def last_policy_digest(self) -> str | None:
        """The digest of the policy the last ``policy_loaded`` row recorded."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT facts ->> 'digest' FROM audit_events WHERE action = %s "
                "ORDER BY id DESC LIMIT 1",
                (str(Action.POLICY_LOADED),),
            ).fetchone()
        return row[0] if row is not None else None
