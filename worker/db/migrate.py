"""Versioned schema migrations: ``migrations/NNNN_name.sql`` in this package, in order.

Each migration runs in its own transaction together with its row in
``schema_migrations``, after taking a transaction-scoped advisory lock: two
processes upgrading at once apply each migration exactly once (the second waits,
then finds it recorded). A migration file therefore never manages transactions
itself (no BEGIN/COMMIT, no CREATE INDEX CONCURRENTLY).

Each transaction waits at most ``lock_timeout`` for any lock (a table lock a migration
takes, the advisory lock): a migration queued behind a long transaction would otherwise
stop every query of the table queued behind it. On a timeout the transaction is rolled
back and tried again after a backoff, ``attempts`` times in all; then
:class:`MigrationLocked` names the migration.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg

from worker.core.backoff import backoff
from worker.core.defaults import (
    MIGRATION_LOCK_ATTEMPTS,
    MIGRATION_LOCK_BACKOFF_CAP,
    MIGRATION_LOCK_TIMEOUT,
)
from worker.core.exceptions import MigrationLocked, SchemaBehind
from worker.db.session import writable_conninfo

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


def upgrade(
    conninfo: str,
    *,
    lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    attempts: int | None = None,
    sleep: Callable[[float], object] | None = None,
) -> list[int]:
    """Apply every migration the database lacks; returns the versions this call applied.

    ``lock_timeout`` seconds (0: no limit) per lock wait, ``attempts`` tries per
    migration (:data:`MIGRATION_LOCK_ATTEMPTS`), ``sleep`` between them (:func:`time.sleep`);
    raises :class:`MigrationLocked`.
    """
    attempts = attempts or MIGRATION_LOCK_ATTEMPTS
    sleep = sleep or time.sleep
    applied: list[int] = []
    with psycopg.connect(writable_conninfo(conninfo), autocommit=True) as conn:
        for migration in migrations():
            for attempt in range(1, attempts + 1):
                try:
                    if _apply(conn, migration, lock_timeout):
                        applied.append(migration.version)
                    break
                except psycopg.errors.LockNotAvailable:
                    if attempt == attempts:
                        raise MigrationLocked(_locked(migration, lock_timeout, attempts)) from None
                    sleep(backoff(attempt, base=1.0, cap=MIGRATION_LOCK_BACKOFF_CAP))
    return applied


def _apply(conn: psycopg.Connection, migration: Migration, lock_timeout: float) -> bool:
    """One migration in one transaction; False when it was applied already."""
    with conn.transaction():
        timeout = f"{round(lock_timeout * 1000)}"
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(_CREATE_TABLE)
        if migration.version in _applied(conn):
            return False
        conn.execute(migration.sql())
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
            (migration.version, migration.name),
        )
    return True


def _locked(migration: Migration, lock_timeout: float, attempts: int) -> str:
    return (
        f"migration {migration.version:04d}_{migration.name} not applied: a lock it needs "
        f"stayed held by another session through {attempts} tries of {lock_timeout:g} s "
        f"each (PG_LOCK_TIMEOUT); find that session in pg_stat_activity, let it finish "
        f"or end it, and run `{UPGRADE_COMMAND}` again"
    )


def current_version(conninfo: str) -> int:
    """The newest migration applied to the database; 0 for an empty one."""
    with psycopg.connect(writable_conninfo(conninfo)) as conn:
        return max(_applied(conn), default=0)


def check(conninfo: str) -> None:
    """Raise :class:`SchemaBehind`, naming the upgrade command, unless every migration
    of this code is applied. Migrations newer than the code are allowed: a rolling
    deployment upgrades the schema first, then the processes."""
    with psycopg.connect(writable_conninfo(conninfo)) as conn:
        done = _applied(conn)
    missing = [migration.version for migration in migrations() if migration.version not in done]
    if missing:
        raise SchemaBehind(missing, UPGRADE_COMMAND)


def _applied(conn: psycopg.Connection) -> set[int]:
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return set()
    return {version for (version,) in conn.execute("SELECT version FROM schema_migrations")}
