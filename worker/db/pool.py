"""The PostgreSQL connection pool of one process.

The rule: build the pool in the process that uses it, after Celery's prefork pool
has forked, that is lazily on first use (as ``worker.runtime`` builds everything),
never at import time nor in a worker's main process before it forks. A pool's
connections and maintenance threads do not survive ``fork()``: a child using its
parent's sockets would interleave its messages with the parent's on one session.
A pool that a forked child inherited is to be dropped there, never closed
(closing it would end the parent's sessions too).

The pool survives a server restart: every connection is checked as it is handed
out (one empty round trip), a broken one is replaced, and while the server is
down ``connection()`` waits up to ``timeout`` seconds, then raises
:class:`psycopg_pool.PoolTimeout`, for the caller's retry policy to handle.
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool


def open_pool(
    url: str,
    *,
    max_size: int = 4,
    timeout: float = 10.0,
    connect_timeout: int = 5,
    name: str = "disburse",
) -> ConnectionPool:
    """A pool for ``url`` that starts connecting in the background and returns at once.

    ``max_size`` small: a prefork child runs one task at a time, and every process
    has its own pool, so the server sees (processes x max_size) sessions at most.
    ``connect_timeout`` bounds one connection attempt (libpq, whole seconds, 2 at least).
    """
    return ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"connect_timeout": connect_timeout, "application_name": name},
        check=ConnectionPool.check_connection,
        timeout=timeout,
        name=name,
        open=True,
    )
