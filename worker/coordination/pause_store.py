"""The stop switches' record in PostgreSQL (table ``pauses``, migration 0009).

PostgreSQL holds every pause, with who set it, why and since when, and who lifted it;
Redis only caches the active ones for the submit path (worker.coordination.pause). A pause is
active until resumed; at most one per scope (``all`` or a provider account's name),
so a second pause of a scope keeps the first one's who and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import ConnectionPool

# Insert unless the scope is paused already; either way, the active pause and whether
# this call set it. One statement: two pauses at once cannot both win.
_PAUSE = """
WITH made AS (
    INSERT INTO pauses (scope, reason, who) VALUES (%(scope)s, %(reason)s, %(who)s)
    ON CONFLICT (scope) WHERE resumed_at IS NULL DO NOTHING
    RETURNING scope, reason, who, since
)
SELECT scope, reason, who, since, true FROM made
UNION ALL
SELECT scope, reason, who, since, false FROM pauses
WHERE scope = %(scope)s AND resumed_at IS NULL AND NOT EXISTS (SELECT 1 FROM made)
"""
_RESUME = """
UPDATE pauses SET resumed_at = now(), resumed_by = %(who)s
WHERE resumed_at IS NULL AND (%(all)s OR scope = ANY(%(scopes)s::text[]))
RETURNING scope, reason, who, since
"""
_ACTIVE = "SELECT scope, reason, who, since FROM pauses WHERE resumed_at IS NULL ORDER BY id"


@dataclass(frozen=True)
class PauseRecord:
    """One active pause: its scope (``all`` or an account), why, who set it, since when."""

    scope: str
    reason: str
    who: str
    since: datetime | None = None  # None for a switch found in Redis alone

    def to_dict(self) -> dict[str, str | None]:
        since = self.since.isoformat() if self.since is not None else None
        return {"scope": self.scope, "reason": self.reason, "who": self.who, "since": since}


class PauseStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def pause(self, scope: str, reason: str, who: str) -> tuple[PauseRecord, bool]:
        """Pause ``scope`` unless it is paused already: the active pause, and True when
        this call set it (False: the earlier pause stays as it was)."""
        params = {"scope": scope, "reason": reason, "who": who}
        while True:
            with self.pool.connection() as conn:
                row = conn.execute(_PAUSE, params).fetchone()
            # None only when the pause in the way was resumed between insert and read.
            if row is not None:
                return PauseRecord(*row[:4]), bool(row[4])

    def resume(self, scopes: Sequence[str] | None, who: str) -> list[PauseRecord]:
        """Lift the active pauses of ``scopes`` (None: every one), recording who did;
        returns those lifted."""
        params = {"who": who, "all": scopes is None, "scopes": list(scopes or ())}
        with self.pool.connection() as conn:
            rows = conn.execute(_RESUME, params).fetchall()
        return [PauseRecord(*row) for row in rows]

    def active(self) -> dict[str, PauseRecord]:
        """Every active pause, by scope, the oldest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(_ACTIVE).fetchall()
        return {row[0]: PauseRecord(*row) for row in rows}
