"""`disburse` starts fast: a command imports what it needs when it runs, and `import
worker`, `disburse --version` and `disburse --help` load none of the heavy libraries.
(The start times themselves are measured by `python -m bench cli_start`.)"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest

import worker
from worker import cli

HEAVY = ("celery", "kombu", "psycopg", "psycopg_pool", "redis", "requests", "marshmallow")


def _loaded_after(code: str) -> set[str]:
    """The heavy top-level packages in sys.modules after ``code`` ran in a fresh Python."""
    report = "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"{code}\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout.splitlines()[-1])) & set(HEAVY)


def _run_disburse(*argv: str) -> str:
    return f"from worker.cli import run\nrun({list(argv)!r})"


@pytest.mark.parametrize(
    "code",
    [
        "import worker",
        "import worker.cli",
        _run_disburse("--version"),
        _run_disburse("--help"),
        _run_disburse(),
    ],
    ids=["import worker", "import worker.cli", "--version", "--help", "no arguments"],
)
def test_starting_imports_no_heavy_library(code: str) -> None:
    assert _loaded_after(code) == set()


def test_every_public_name_is_there() -> None:
    for name in worker.__all__:
        assert getattr(worker, name) is not None, name
    assert set(worker.__all__) <= set(dir(worker))
    with pytest.raises(AttributeError):
        _ = worker.no_such_name  # type: ignore[attr-defined]


def test_the_table_of_commands_names_each_command_and_its_help() -> None:
    for name, (module, summary) in cli.COMMANDS.items():
        command = getattr(importlib.import_module(f"worker.cli.{module}"), name)
        assert isinstance(command, click.Command)
        assert command.name == name
        assert command.short_help is None and not command.hidden and not command.deprecated
        first_paragraph = (command.help or "").partition("\n\n")[0]
        assert first_paragraph.split() == summary.split(), name


@pytest.mark.parametrize("width", [40, 80, 200])
def test_help_lists_the_commands_as_click_lists_them_once_imported(width: int) -> None:
    def listing(format_commands: object) -> str:
        ctx = click.Context(cli.main, info_name="disburse")
        formatter = click.HelpFormatter(width=width)
        format_commands(ctx, formatter)  # type: ignore[operator]
        return formatter.getvalue()

    from_table = listing(cli.main.format_commands)
    for name in cli.COMMANDS:
        assert cli.main.get_command(click.Context(cli.main), name) is not None
    # click.Group's own, on every command imported.
    imported = listing(lambda ctx, fmt: click.Group.format_commands(cli.main, ctx, fmt))
    assert from_table == imported
    assert all(f"  {name} " in from_table for name in cli.COMMANDS)


def test_an_unknown_command_is_still_refused() -> None:
    assert cli.main.get_command(click.Context(cli.main), "nosuch") is None
    assert cli.run(["nosuch"]) == 1
