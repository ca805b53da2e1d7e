"""The ``disburse`` group itself: help, and one exit code per kind of failure."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from worker import cli
from worker.core.config import get_settings


def test_help_lists_every_command_and_the_environment() -> None:
    result = CliRunner().invoke(cli.main, ["--help"])

    assert result.exit_code == 0
    for command in ("enqueue", "status", "export", "approve", "cancel", "pause", "resume"):
        assert f"\n  {command} " in result.output
    assert "DATABASE_URL" in result.output and "REDIS_URL" in result.output


@pytest.mark.parametrize(
    "argv", [["no-such-command"], ["status"], ["enqueue", "x.csv"], ["demo", "--payouts", "0"]]
)
def test_a_usage_mistake_is_a_user_error_not_a_system_problem(argv: list[str]) -> None:
    result = CliRunner().invoke(cli.main, argv)

    assert result.exit_code == 1
    assert "Error:" in result.output
    assert "Traceback" not in result.output


def test_a_broken_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VEXORA_RATE_LIMIT", "fast")
    get_settings.cache_clear()
    try:
        assert cli.run(["pause"]) == 2
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: configuration: ")
    assert "VEXORA_RATE_LIMIT" in line


def test_run_returns_the_commands_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["--help"]) == 0
    assert cli.run(["no-such-command"]) == 1
