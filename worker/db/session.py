"""The limits every pooled PostgreSQL session runs under, sent as libpq connection options.

Without them a statement, a lock wait or a transaction left open by a stuck process
lasts forever, holding what it holds, and a connection to a server that vanished
without a sound (a network cut, a failover) waits for the kernel's two hours. So every
session of a pool gets, as connection options (no extra round trip):

* ``statement_timeout`` (PG_STATEMENT_TIMEOUT, 60 s): the longest legitimate statement
  is an enqueue's COPY, which lasts as long as its rows take to validate (100,000
  rows: a few seconds); migrations do not run on the pool.
* ``lock_timeout`` (PG_LOCK_TIMEOUT, 10 s): the ledger's row locks are held for a
  statement's time; a multi-row enqueue waits its turn longer (worker.ledger).
* ``idle_in_transaction_session_timeout`` (PG_IDLE_IN_TRANSACTION_TIMEOUT, 60 s).
* TCP keepalives: idle 30 s, then a probe every 10 s, dead after 3 unanswered, on our
  side (libpq's ``keepalives*``: a server gone silent fails our statement) and on the
  server's (``tcp_keepalives_*``: a worker gone silent loses its session and its locks).

``0`` turns a timeout off. The URL's own ``options`` come after these, so a ``-c`` there
wins, as do its own ``keepalives*`` parameters (on both sides).

Every connection also asks for a writable server (libpq's ``target_session_attrs``,
unless the URL sets it): with a multi-host DATABASE_URL (``postgresql://u@h1,h2/db``)
libpq skips a standby, so after a failover a reconnect lands on the promoted one, never
on a server that would refuse the ledger's writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


WRITABLE = {"target_session_attrs": "read-write"}


def writable(conninfo: str) -> dict[str, str]:
    """``target_session_attrs=read-write``, unless ``conninfo`` says otherwise."""
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:  # the connection reports it, with libpq's words
        given = {}
    return {} if "target_session_attrs" in given else dict(WRITABLE)


def writable_conninfo(conninfo: str) -> str:
    """``conninfo`` asking for a writable server (:func:`writable`)."""
    return make_conninfo(conninfo, **writable(conninfo)) if writable(conninfo) else conninfo


@dataclass(frozen=True)
class SessionLimits:
    """Seconds; 0: no limit."""

    statement_timeout: float = 60.0
    lock_timeout: float = 10.0
    idle_in_transaction_timeout: float = 60.0

    def options(self) -> str:
        """The libpq ``options`` setting them: ``-c name=milliseconds`` each."""
        settings = {
            "statement_timeout": self.statement_timeout,
            "lock_timeout": self.lock_timeout,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout,
        }
        return " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in settings.items())


def connection_kwargs(conninfo: str, limits: SessionLimits) -> dict[str, str]:
    """libpq parameters to pass beside ``conninfo``: the limits' options (after the URL's
    own, which win), and the keepalives and ``target_session_attrs`` the URL does not
    set itself."""
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:  # the connection reports it, with libpq's words
        given = {}
    kwargs = {name: value for name, value in KEEPALIVES.items() if name not in given}
    kwargs.update(writable(conninfo))
    keepalives = {name: str(given.get(name, value)) for name, value in KEEPALIVES.items()}
    options = limits.options()
    if keepalives["keepalives"] != "0":
        options += "".join(
            f" -c tcp_{name}={keepalives[name]}"
            for name in ("keepalives_idle", "keepalives_interval", "keepalives_count")
        )
    own = given.get("options")
    kwargs["options"] = f"{options} {own}" if own else options
    return kwargs
