"""Commands that run things on this machine: the provider sandbox and the demo."""

from __future__ import annotations

from pathlib import Path

import click


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
def demo(payouts: int, workers: int, output: Path) -> None:
    """The whole system end to end on this machine, on private servers."""
    from worker.dev import demo as run_demo

    code = run_demo.run(payouts=payouts, workers=workers, output=output)
    if code:
        raise click.exceptions.Exit(code)
