"""What every ``disburse`` command shares: its exit codes and the errors that carry them,
where a CSV goes (``--output``, else stdout), and a time option's type.

0 is success, 1 a user's mistake (a bad file, an unknown batch, a wrong option), 2 a
system problem (a server out of reach, a broken configuration).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from schemas import RowError

USER_ERROR = 1
SYSTEM_PROBLEM = 2

OUTPUT = click.Path(dir_okay=False, writable=True, path_type=Path)


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


@contextlib.contextmanager
def writing(path: Path | None) -> Iterator[IO[str]]:
    """``path`` opened for a CSV (stdout without one); a file error names the path."""
    if path is None:
        yield sys.stdout
        return
    try:
        out = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    with out:
        yield out


class IsoTime(click.ParamType):
    """An ISO 8601 time with its UTC offset (``2026-12-24T09:00+07:00``, ``...Z``): a time
    without one would be read in whichever zone the machine is set to."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            at = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 time such as 2026-12-24T09:00+07:00", param, ctx
            )
        if at.tzinfo is None:
            self.fail(f"{value!r} has no UTC offset: add one, e.g. +07:00 or Z", param, ctx)
        return at


ISO_TIME = IsoTime()
