"""The console's users, their failed sign-ins and the key of its session cookies, in
PostgreSQL (migration 0013). Passwords arrive here already hashed (worker.flows.users)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from worker.ledger.queries import Queries


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    name: str
    role: str
    password_hash: str


class Users(Queries):
    """Users added, read and re-hashed; failed sign-ins counted."""

    def add_user(self, name: str, role: str, password_hash: str, *, by: str) -> bool:
        """Add a user; False when the name is taken (nothing changes)."""
        with self._connection() as conn:
            try:
                conn.execute(
                    "INSERT INTO console_users (name, role, password_hash, created_by) "
                    "VALUES (%s, %s, %s, %s)",
                    (name, role, password_hash, by),
                )
            except psycopg.errors.UniqueViolation:
                return False
        return True

    def user(self, name: str) -> ConsoleUser | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT name, role, password_hash FROM console_users WHERE name = %s", (name,)
            ).fetchone()
        return ConsoleUser(*row) if row is not None else None

    def users(self) -> list[ConsoleUser]:
        with self._connection() as conn:
            rows = conn.execute("SELECT name, role, '' FROM console_users ORDER BY name").fetchall()
        return [ConsoleUser(*row) for row in rows]

    def set_password_hash(self, name: str, password_hash: str) -> None:
        with self._connection() as conn:
            conn.execute(
                "UPDATE console_users SET password_hash = %s WHERE name = %s",
                (password_hash, name),
            )

    def signin_failures(self, name: str, address: str, window: float) -> int:
        """Failed sign-ins of ``name`` from ``address`` within the last ``window`` seconds."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM console_signin_failures WHERE name = %s AND address = %s "
                "AND at > now() - make_interval(secs => %s)",
                (name, address, window),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def record_signin_failure(self, name: str, address: str, window: float) -> None:
        """One more failure; the rows older than ``window`` go (the table stays small)."""
        with self._connection() as conn:
            conn.execute(
                "DELETE FROM console_signin_failures WHERE at < now() - make_interval(secs => %s)",
                (window,),
            )
            conn.execute(
                "INSERT INTO console_signin_failures (name, address) VALUES (%s, %s)",
                (name, address),
            )

    def clear_signin_failures(self, name: str, address: str) -> None:
        with self._connection() as conn:
            conn.execute(
                "DELETE FROM console_signin_failures WHERE name = %s AND address = %s",
                (name, address),
            )

    def session_key(self) -> str:
        """The key signing the console's session cookies (drawn by migration 0013)."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT key FROM ledger_keys WHERE name = 'console_session'"
            ).fetchone()
        assert row is not None, "migration 0013 draws the key"
        return str(row[0])
