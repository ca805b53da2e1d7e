"""The PostgreSQL connection pool of one process.

The rule: build the pool in the process that uses it, after Celery's prefork pool
has forked, that is lazily on first use (as ``worker.runtime`` builds everything),
never at import time nor in a worker's main process before it forks. A pool's
connections and maintenance threads do not survive ``fork()``: a child using its
parent's sockets would interleave its messages with the parent's on one session.
A pool that a forked child inherited is to be dropped there, never closed
(closing it would end the parent's sessions too).

The pool survives a server restart: every connection is checked as it is handed
out, a broken one is replaced, and while the server is down ``connection()`` waits
up to ``timeout`` seconds, then raises :class:`psycopg_pool.PoolTimeout`, for the
caller's retry policy to handle. The check costs no round trip for a connection
whose socket is quiet (see :func:`check_quiet`).
"""

from __future__ import annotations

import select

import psycopg
from psycopg_pool import ConnectionPool

from worker.db.session import SessionLimits, connection_kwargs


def open_pool(
    url: str,
    *,
    max_size: int = 4,
    timeout: float = 10.0,
    connect_timeout: int = 5,
    name: str = "disburse",
    limits: SessionLimits | None = None,
) -> ConnectionPool:
    """A pool for ``url`` that starts connecting in the background and returns at once.

    ``max_size`` small: a prefork child runs one task at a time, and every process
    has its own pool, so the server sees (processes x max_size) sessions at most.
    ``connect_timeout`` bounds one connection attempt (libpq, whole seconds, 2 at least).
    Every session runs under ``limits`` (default: :class:`SessionLimits`' defaults) and
    with TCP keepalives (worker.db.session).
    """
    kwargs: dict[str, object] = {"connect_timeout": connect_timeout, "application_name": name}
    kwargs.update(connection_kwargs(url, limits or SessionLimits()))
    return ConnectionPool(
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
