"""Versioned schema migrations: ``migrations/NNNN_name.sql`` in this package, in order.

Each migration runs in its own transaction together with its row in
``schema_migrations``, after taking a transaction-scoped advisory lock: two
processes upgrading at once apply each migration exactly once (the second waits,
then finds it recorded). A migration file therefore never manages transactions
itself (no BEGIN/COMMIT, no CREATE INDEX CONCURRENTLY).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg

from worker.exceptions import SchemaBehind

UPGRADE_COMMAND = "disburse db upgrade"
# The advisory lock key every upgrade takes: any constant unlikely to be used elsewhere.
_LOCK_KEY = 0x64697362_75727365  # "disburse"
_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
_CREATE_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    source: Traversable

    def sql(self) -> bytes:
        return self.source.read_bytes()


def migrations() -> list[Migration]:
    """Every migration shipped with this code, oldest first."""
    found: dict[int, Migration] = {}
    for source in (resources.files(__package__) / "migrations").iterdir():
        if not source.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(source.name)
        if match is None:
            raise RuntimeError(f"migration {source.name!r} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migrations numbered {version:04d}")
        found[version] = Migration(version, match.group(2), source)
    return [found[version] for version in sorted(found)]


def upgrade(conninfo: str) -> list[int]:
    """Apply every migration the database lacks; returns the versions this call applied."""
    applied: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for migration in migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(_CREATE_TABLE)
                if migration.version in _applied(conn):
                    continue
                conn.execute(migration.sql())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration.version)
    return applied


def current_version(conninfo: str) -> int:
    """The newest migration applied to the database; 0 for an empty one."""
    with psycopg.connect(conninfo) as conn:
        return max(_applied(conn), default=0)


def check(conninfo: str) -> None:
    """Raise :class:`SchemaBehind`, naming the upgrade command, unless every migration
    of this code is applied. Migrations newer than the code are allowed: a rolling
    deployment upgrades the schema first, then the processes."""
    with psycopg.connect(conninfo) as conn:
        done = _applied(conn)
    missing = [migration.version for migration in migrations() if migration.version not in done]
    if missing:
        raise SchemaBehind(missing, UPGRADE_COMMAND)


def _applied(conn: psycopg.Connection) -> set[int]:
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return set()
    return {version for (version,) in conn.execute("SELECT version FROM schema_migrations")}
