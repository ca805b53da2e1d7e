"""Is the database ready for this code: reachable, and its schema current?

Every long-running process (worker, beat, the web receiver) checks before it takes
work, and only checks: it never migrates. A schema changes when someone asks for it
(``disburse db upgrade``; the demo, LocalCluster and the tests run the same upgrade
themselves before they start any process), so processes of two versions, mid-deployment,
never race to change it.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from worker.core.defaults import DB_CHECK_CONNECT_TIMEOUT
from worker.core.exceptions import DatabaseUnavailable
from worker.core.redact import mask_text
from worker.db import migrate


def check_schema(url: str) -> None:
    """Return when the database at ``url`` holds every migration of this code.

    Raises :class:`~worker.core.exceptions.SchemaBehind` (naming ``disburse db upgrade``)
    when it lacks some, :class:`psycopg.OperationalError` when it cannot be reached.
    """
    migrate.check(make_conninfo(url, connect_timeout=DB_CHECK_CONNECT_TIMEOUT))


def unreachable(url: str, error: psycopg.OperationalError) -> str:
    """One line saying which server failed and why, the URL's password masked."""
    if isinstance(error, DatabaseUnavailable):
        return str(error)  # says it already (worker.db.pool)
    reason = next(iter(str(error).splitlines()), "").strip() or type(error).__name__
    return mask_text(f"cannot connect to PostgreSQL at {url}: {reason}")
