"""The console's first user for `disburse up` and the demo: an admin with a generated
password, printed once on the terminal that started them (never logged or written)."""

from __future__ import annotations

import secrets

FIRST_USER = "admin"


def first_login() -> tuple[str, str | None]:
    """Add ``admin`` with a new password when the ledger has no console user yet: its
    name and password; a ledger with users already: the first name, and None."""
    from worker.celery import runtime

    existing = runtime.ledger().users()
    if existing:
        return existing[0].name, None
    password = secrets.token_urlsafe(15)
    runtime.accounts().add(FIRST_USER, "admin", password, by="disburse up")
    return FIRST_USER, password


def console_lines(url: str | None) -> list[str]:
    """What to print about the console: its URL and how to sign in."""
    if url is None:
        return []
    name, password = first_login()
    said = (
        f"sign in as {name} with password {password} (shown once; "
        "`disburse users add NAME --role R` adds people)"
        if password
        else f"sign in as a user of `disburse users` (e.g. {name})"
    )
    return [f"{url}  {said}"]
