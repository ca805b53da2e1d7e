"""What an installed package carries: its version from the distribution's metadata, the
Procfile's processes in code, and the marker that its types are checked."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from click.testing import CliRunner

import worker
from worker.cli import main
from worker.dev.cluster import LocalCluster, procfile_commands

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_the_distributions() -> None:
    assert worker.__version__ == metadata.version("disburse")
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"disburse {worker.__version__}\n"


def test_the_procfile_and_the_processes_in_code_are_the_same() -> None:
    # LocalCluster (so the demo and `disburse up`) starts the processes from code.
    assert procfile_commands((ROOT / "Procfile").read_text()) == procfile_commands()


def test_every_package_says_its_types_are_checked() -> None:
    for package in ("worker", "schemas", "tasks"):
        assert (ROOT / package / "py.typed").is_file(), package


def test_given_servers_and_provider_are_used_not_started() -> None:
    cluster = LocalCluster(
        redis_url="redis://127.0.0.1:1/0",
        database_url="postgresql://127.0.0.1:1/x",
        provider_url="https://provider.example",
        port=8123,
    )
    try:
        assert (cluster.redis, cluster.postgres, cluster.sandbox) == (None, None, None)
        env = cluster.env()
        assert env["REDIS_URL"] == "redis://127.0.0.1:1/0"
        assert env["DATABASE_URL"] == "postgresql://127.0.0.1:1/x"
        assert env["VEXORA_BASE_URL"] == "https://provider.example"
        assert env["PORT"] == "8123"
        # The provider's details API and the public notify URL are the user's own.
        assert "DETAILS_BASE_URL" not in env and "NOTIFY_URL" not in env
    finally:
        cluster.close()
