"""The README where it copies the code: the rows files' column tables and the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from schemas import MARKETS
from worker import cli
from worker.core.config import load_settings

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def first_table(text: str) -> list[str]:
    """The lines of the first Markdown table in ``text``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("market", MARKETS)
def test_a_markets_column_table_is_what_disburse_fields_prints(market: str) -> None:
    rows_files = section("Rows files: the columns of each market")
    match = re.search(rf"^### {market}: .*?\n(.*?)(?=^### |\Z)", rows_files, re.M | re.S)
    assert match, f"README's 'Rows files' has no '### {market}: ...' heading"
    result = CliRunner().invoke(cli.main, ["fields", "--market", market])
    assert result.exit_code == 0, result.output
    name, blank, *printed = result.output.splitlines()
    assert (name, blank) == (market, "")
    assert first_table(match.group(1)) == printed


class _Recording(dict[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def test_the_configuration_table_names_every_variable_the_settings_read() -> None:
    env = _Recording()
    load_settings(env)
    markets = "|".join(MARKETS)
    read = {re.sub(rf"^VEXORA_({markets})_", "VEXORA_<MARKET>_", name) for name in env.asked}
    assert "DATABASE_URL" in read and "VEXORA_<MARKET>_RATE_LIMIT" in read  # it recorded
    documented = {
        name
        for row in first_table(section("Configuration"))[2:]
        # Variable names have an underscore; the market codes beside them do not.
        for name in re.findall(r"`([A-Z][A-Z0-9<>]*_[A-Z0-9_<>]*)`", row.split(" | ")[0])
    }
    assert read - documented == set(), "settings read but not in README's Configuration table"
    assert documented - read == set(), "in README's Configuration table but never read"


def test_disburse_help_names_every_variable_the_settings_read() -> None:
    env = _Recording()
    load_settings(env)
    help_text = CliRunner().invoke(cli.main, ["--help"]).output
    markets = "|".join(MARKETS)
    # One market's own account is named once, as VEXORA_<MARKET>_*.
    read = {name for name in env.asked if not re.match(rf"^VEXORA_({markets})_", name)}
    assert "VEXORA_<MARKET>_*" in help_text
    assert sorted(name for name in read if name not in help_text) == []
