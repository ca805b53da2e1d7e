"""The PostgreSQL connection pool of one process.

The rule: build the pool in the process that uses it, after Celery's prefork pool
has forked, that is lazily on first use (as ``worker.celery.runtime`` builds everything),
never at import time nor in a worker's main process before it forks. A pool's
connections and maintenance threads do not survive ``fork()``: a child using its
parent's sockets would interleave its messages with the parent's on one session.
A pool that a forked child inherited is to be dropped there, never closed
(closing it would end the parent's sessions too).

The pool survives a server restart: every connection is checked as it is handed
out, a broken one is replaced, and while the server is down ``connection()`` waits
up to ``timeout`` seconds, then raises :class:`~worker.core.exceptions.DatabaseUnavailable`
(a ``psycopg_pool.PoolTimeout``) with the server's own reason, for the caller's retry
policy to handle. The check costs no round trip for a connection whose socket is quiet
(see :func:`check_quiet`).
"""

from __future__ import annotations

import select
from typing import Any, Self

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from worker.core.exceptions import DatabaseUnavailable
from worker.core.redact import mask_text
from worker.db.readiness import unreachable
from worker.db.session import SessionLimits, connection_kwargs


class LedgerPool(ConnectionPool):
    """A pool that says why it has no connection to give.

    psycopg_pool connects in the background and, when it cannot, only logs the reason
    and times the caller out with "couldn't get a connection after N sec": a wrong
    user, a missing database and a wrong port all look alike. This pool keeps the last
    connection attempt's error (through its connection class) and turns the timeout
    into :class:`DatabaseUnavailable` carrying that reason.
    """

    def __init__(self, conninfo: str, **kwargs: Any) -> None:
        self.failure: psycopg.OperationalError | None = None  # of the last attempt
        super().__init__(conninfo, connection_class=_recording(self), **kwargs)

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        try:
            return super().getconn(timeout)
        except PoolTimeout as exc:
            raise DatabaseUnavailable(self._why(timeout)) from exc

    def _why(self, timeout: float | None) -> str:
        failure = self.failure
        if failure is not None:
            return unreachable(self.conninfo_text, failure)
        waited = self.timeout if timeout is None else timeout
        return mask_text(
            f"no connection to PostgreSQL at {self.conninfo_text} within {waited:g} s: "
            f"every one of this process's {self.max_size} is in use, or the server is "
            "slow to answer"
        )

    @property
    def conninfo_text(self) -> str:
        return self.conninfo if isinstance(self.conninfo, str) else "DATABASE_URL"


def _recording(pool: LedgerPool) -> type[psycopg.Connection[Any]]:
    """A connection class that tells ``pool`` how its last connection attempt went."""

    class Recorded(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                pool.failure = exc
                raise
            pool.failure = None
            return conn

    return Recorded


def open_pool(
    url: str,
    *,
    max_size: int = 6,
    timeout: float = 10.0,
    connect_timeout: int = 5,
    name: str = "disburse",
    limits: SessionLimits | None = None,
) -> LedgerPool:
    """A pool for ``url`` that starts connecting in the background and returns at once.

    ``max_size`` small: a prefork child runs one task at a time, and every process
    has its own pool, so the server sees (processes x max_size) sessions at most (8
    processes: 48, well under PostgreSQL's default 100). Six: a submit task's
    coordinator claims and answers in groups on one, and its sender threads write the
    rarer failures (a refusal, a connection refused) on the others, each in a
    statement of a few ms, so that a burst of failures from many POSTs in flight
    waits briefly for a session rather than opening more.
    ``connect_timeout`` bounds one connection attempt (libpq, whole seconds, 2 at least).
    Every session runs under ``limits`` (default: :class:`SessionLimits`' defaults) and
    with TCP keepalives (worker.db.session).
    """
    kwargs: dict[str, object] = {"connect_timeout": connect_timeout, "application_name": name}
    kwargs.update(connection_kwargs(url, limits or SessionLimits()))
    return LedgerPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs=kwargs,
        check=check_quiet,
        timeout=timeout,
        name=name,
        open=True,
    )


def check_quiet(conn: psycopg.Connection) -> None:
    """The pool's check of a connection it is about to hand out: a full check (one empty
    round trip, raising when the connection is broken) only when the idle connection's
    socket has something to read.

    An idle session receives nothing unless it is ending: a server that stops, crashes
    or ends the session (``pg_terminate_backend``) sends its goodbye or closes the
    socket, and either makes it readable. A quiet socket is handed out at once, which
    saves a round trip per checkout (two per payout on the submit path). A session lost
    without a sound (a network cut) fails on its next statement, as it would have
    failed on the check's round trip too, only later.
    """
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)
