"""``disburse db``: the ledger's schema in DATABASE_URL."""

from __future__ import annotations

import click

from worker.cli.common import SystemProblem
from worker.core.exceptions import MigrationLocked, SchemaBehind
from worker.core.redact import mask_text


@click.group()
def db() -> None:
    """The ledger's database schema (DATABASE_URL)."""


@db.command()
def upgrade() -> None:
    """Apply every pending schema migration."""
    from worker.core.config import get_settings
    from worker.db import migrate

    settings = get_settings()
    url = settings.database_url
    try:
        applied = set(migrate.upgrade(url, lock_timeout=settings.pg_lock_timeout))
    except MigrationLocked as exc:
        raise SystemProblem(str(exc)) from None
    for migration in migrate.migrations():
        if migration.version in applied:
            click.echo(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        click.echo(f"up to date: {mask_text(url)}")


@db.command()
def status() -> None:
    """The schema's version against this code's; exits 1 when it is behind."""
    from worker.core.config import get_settings
    from worker.db import migrate

    url = get_settings().database_url
    current = migrate.current_version(url)
    newest = max((migration.version for migration in migrate.migrations()), default=0)
    click.echo(f"{mask_text(url)}: schema version {current:04d}, this code's {newest:04d}")
    try:
        migrate.check(url)
    except SchemaBehind as exc:
        click.echo(f"behind: {exc}")
        raise click.exceptions.Exit(1) from None
    newer = "" if current == newest else " (the schema is newer than this code)"
    click.echo(f"up to date{newer}")
