"""``disburse users``: the operations console's people and their roles."""

from __future__ import annotations

import sys

import click

from worker.cli.common import UserError
from worker.core.exceptions import InputError
from worker.core.roles import Role


@click.group()
def users() -> None:
    """The operations console's users and their roles.

    \b
    Roles: viewer reads; operator cancels, pauses, retries and resolves; approver
    approves (never their own batch); admin manages users and may do everything.
    """


@users.command()
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
def add(name: str, role: str) -> None:
    """Add the user NAME; the password is asked for (or read from stdin's first line)."""
    from worker.celery import runtime
    from worker.core.config import get_settings

    if sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        runtime.accounts().add(name, role, password, by=get_settings().operator)
    except InputError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"user {name} added as {role}")


@users.command(name="list")
def list_users() -> None:
    """Every user and their role."""
    from worker.celery import runtime

    for user in runtime.ledger().users():
        click.echo(f"{user.name}  {user.role}")
