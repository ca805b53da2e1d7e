"""What every ``disburse`` command shares: its exit codes and the errors that carry them.

0 is success, 1 a user's mistake (a bad file, an unknown batch, a wrong option), 2 a
system problem (a server out of reach, a broken configuration).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from schemas import RowError

USER_ERROR = 1
SYSTEM_PROBLEM = 2


class UserError(click.ClickException):
    """The user asked for something that cannot be done as asked; exit 1."""

    exit_code = USER_ERROR

    def format_message(self) -> str:
        return f"error: {self.message}"

    def show(self, file: object = None) -> None:
        click.echo(self.format_message(), err=True)


class SystemProblem(UserError):
    """Something outside the user's input is wrong (a server, the configuration); exit 2."""

    exit_code = SYSTEM_PROBLEM


def echo_row_errors(rejected: Iterable[RowError]) -> None:
    """Every error of every rejected row, one line each on stderr: ``row N: field: why``."""
    for error in rejected:
        for name, messages in error.errors.items():
            click.echo(f"row {error.row}: {name}: {' '.join(messages)}", err=True)


def pause_text(name: str, reason: str) -> str:
    """One pause switch said plainly: which accounts it stops, and why."""
    from worker.coordination.pause import ALL

    return f"{'every provider account' if name == ALL else f'provider account {name}'}: {reason}"
