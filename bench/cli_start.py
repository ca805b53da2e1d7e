"""How long ``disburse`` takes to start and answer: ``--version``, ``--help``, and
``status`` of a small batch on a private PostgreSQL and Redis.

Each command is a fresh process, timed from outside (wall clock, start to exit). Ours is
the installed ``disburse``, which imports a command's module and the libraries it needs
when that command runs; the baseline runs the same command after importing every
command and the whole worker first, as ``disburse`` did before it loaded them lazily.
The two alternate run by run, and the median of each is shown.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import MARKET, Context, Result, private_servers, say, seconds, times

NAME = "cli_start"

# The targets, in seconds (median wall time of one command).
TARGETS = {"--version": 0.3, "--help": 0.3, "status": 0.6}

DISBURSE = [sys.executable, "-m", "worker"]
# The baseline: everything the eager ``disburse`` imported, then the same command.
EAGER = [
    sys.executable,
    "-c",
    "import sys, worker.celery.runtime, worker.flows.controls, worker.flows.producer, "
    "worker.ledger, worker.outbox\n"
    "from worker import cli\n"
    "for name in cli.COMMANDS: cli.main.get_command(None, name)\n"
    "sys.exit(cli.run(sys.argv[1:]))",
]


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-3:])} exited {done.returncode}: {done.stderr[-500:]}")
    return elapsed


def _medians(args: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """(ours, baseline): median wall seconds of ``disburse ARGS``, run in turn."""
    ours: list[float] = []
    base: list[float] = []
    _wall(DISBURSE + args, env)  # warm the file cache for both
    _wall(EAGER + args, env)
    for _ in range(runs):
        ours.append(_wall(DISBURSE + args, env))
        base.append(_wall(EAGER + args, env))
    return statistics.median(ours), statistics.median(base)


def _small_batch(env: dict[str, str], directory: Path) -> str:
    rows = directory / "payouts.csv"
    template = [*DISBURSE, "template", "--market", MARKET, "--output", str(rows)]
    subprocess.run(template, env=env, check=True, capture_output=True)
    done = subprocess.run(
        [*DISBURSE, "enqueue", str(rows), "--market", MARKET, "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(done.stdout)["batch_id"])


def run(ctx: Context) -> list[Result]:
    from worker.dev.credentials import sandbox_env

    runs = ctx.size(15, 5)
    measured: dict[str, tuple[float, float]] = {}
    with private_servers(), tempfile.TemporaryDirectory() as work:
        # The sandbox's credentials name a provider account for the enqueue; nothing
        # here calls it.
        env = {**os.environ, **sandbox_env()}
        for flag in ("--version", "--help"):
            say(f"cli_start: disburse {flag}, {runs} runs each")
            measured[flag] = _medians([flag], env, runs)
        batch = _small_batch(env, Path(work))
        say(f"cli_start: disburse status {batch}, {runs} runs each")
        measured["status"] = _medians(["status", batch], env, runs)
    results = []
    for name, (ours, base) in measured.items():
        target = TARGETS[name]
        results.append(
            Result(
                case=f"disburse {name} (start to exit)",
                ours=seconds(ours),
                baseline=seconds(base),
                ratio=times(base / ours) + " faster",
                target=f"< {target:g} s",
                passed=ours < target,
                raw={"ours_s": ours, "baseline_s": base, "runs": runs},
            )
        )
    results[0].notes.append(
        "cli_start: median wall time of a fresh process; the baseline imports every "
        "command and the whole worker first, as before commands were loaded lazily."
    )
    return results


def main() -> int:
    from bench.common import table

    print(table(run(Context(quick="--quick" in sys.argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
