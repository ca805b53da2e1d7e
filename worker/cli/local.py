"""Commands that run things on this machine: the provider sandbox, the demo and ``up``."""

from __future__ import annotations

from pathlib import Path

import click

from worker.cli.common import UserError


@click.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def sandbox(options: tuple[str, ...]) -> None:
    """The local payout provider simulator (`disburse sandbox --help` lists its knobs)."""
    from worker.sandbox.cli import main as sandbox_main

    code = sandbox_main(list(options))
    if code:
        raise click.exceptions.Exit(code)


_LATENCY_MEDIAN = click.option(
    "--latency-median",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="The sandbox answers after a lognormal wait of this median, like a real provider "
    "(e.g. 0.25; 0: at once).",
)
_LATENCY_SIGMA = click.option(
    "--latency-sigma",
    type=click.FloatRange(min=0),
    default=0.6,
    show_default=True,
    help="The spread of that wait: median * exp(sigma * N(0,1)), at most 10 medians.",
)


@click.command()
@click.option("--payouts", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("demo-results.csv"),
    show_default=True,
    help="Where the results CSV goes.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-logs"),
    show_default=True,
    help="Where each process writes its log (kept).",
)
@_LATENCY_MEDIAN
@_LATENCY_SIGMA
def demo(
    payouts: int,
    workers: int,
    output: Path,
    log_dir: Path,
    latency_median: float,
    latency_sigma: float,
) -> None:
    """The whole system end to end on this machine, on private servers.

    The sandbox provider settles about 5% of payouts FAILED on purpose, and a few rows
    of each sample file are broken on purpose, to show how both are reported.
    """
    from worker.dev import demo as run_demo

    code = run_demo.run(
        payouts=payouts,
        workers=workers,
        output=output,
        log_dir=log_dir,
        latency_median=latency_median,
        latency_sigma=latency_sigma,
    )
    if code:
        raise click.exceptions.Exit(code)


@click.command(
    epilog="""\b
Examples:
  disburse up                   # everything; then, in a second shell here:
  disburse enqueue payouts.csv --market ID
  disburse up --servers-only    # Redis, PostgreSQL, sandbox; then: honcho start
  disburse up --replicated      # PostgreSQL + standby, Redis + replica + Sentinels
  disburse failover postgres    # then, in a second shell: kill the primary, promote

\b
REDIS_URL, DATABASE_URL, VEXORA_BASE_URL set (in the environment or a .env of
yours): those servers are used instead of private ones or the sandbox; a
database of yours holding payouts not yet final is refused (the sandbox would take
them).
NOTIFY_URL, RECONCILE_EVERY, RECONCILE_AFTER, SWEEP_AFTER set: passed on."""
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes (each runs 4 tasks at once).")  # fmt: skip
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=8701,
    show_default=True,
    help="The web receiver's port (0: any free one).",
)
@click.option(
    "--servers-only",
    is_flag=True,
    help="Only Redis, PostgreSQL and the sandbox: run the Procfile yourself (honcho start).",
)
@click.option(
    "--replicated",
    is_flag=True,
    help="PostgreSQL with a streaming standby, Redis with a replica and 3 Sentinels: "
    "`disburse failover postgres|redis` then fails one over.",
)
@click.option(
    "--failure-ratio",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Share of payouts the sandbox settles FAILED, on purpose.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("disburse-logs"),
    show_default=True,
    help="Where each process writes its log (kept after the stop).",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".env"),
    show_default=True,
    help="Where the environment for other shells is written (never over a .env of yours).",
)
@_LATENCY_MEDIAN
@_LATENCY_SIGMA
def up(
    workers: int,
    port: int,
    servers_only: bool,
    replicated: bool,
    failure_ratio: float,
    log_dir: Path,
    env_file: Path,
    latency_median: float,
    latency_sigma: float,
) -> None:
    """The whole system on this machine for your own files, until Ctrl-C.

    Private Redis and PostgreSQL, the sandbox provider, the web receiver (webhooks
    from the sandbox arrive there), workers and beat. Prints one line per process and
    the environment for a second shell, which it also writes to .env (removed at the
    stop): `disburse enqueue` run in this directory then reaches this system.
    """
    from worker.dev import up as run_up

    code = run_up.run(
        workers=workers,
        port=port,
        log_dir=log_dir,
        env_file=env_file,
        servers_only=servers_only,
        failure_ratio=failure_ratio,
        replicated=replicated,
        latency_median=latency_median,
        latency_sigma=latency_sigma,
    )
    if code:
        raise click.exceptions.Exit(code)


@click.command()
@click.argument("server", type=click.Choice(["postgres", "redis"]))
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("disburse-logs"),
    show_default=True,
    help="The log directory of the `disburse up --replicated` to fail over.",
)
def failover(server: str, log_dir: Path) -> None:
    """Fail over a server of `disburse up --replicated` (on this machine only).

    postgres: the primary is SIGKILLed and the standby promoted. redis: the master is
    SIGKILLed and the Sentinels promote the replica. The running workers follow on their
    own; watch `disburse status`. One failover of each per `disburse up`.
    """
    from worker.dev import replicated

    fail_over = (
        replicated.fail_over_postgres if server == "postgres" else replicated.fail_over_redis
    )
    try:
        click.echo(fail_over(log_dir.resolve()))
    except FileNotFoundError:
        raise UserError(
            f"no `disburse up --replicated` runs with --log-dir {log_dir}: this command only "
            "fails over the servers it started"
        ) from None
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
