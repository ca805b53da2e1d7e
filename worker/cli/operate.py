"""Commands for the whole cluster: pause and resume submissions, reconcile now."""

from __future__ import annotations

import click

from worker.cli.common import pause_text


@click.command()
@click.option("--reason", default="paused by an operator", help="Said by status and resume.")
def pause(reason: str) -> None:
    """Stop all submissions, cluster-wide (every provider account)."""
    import worker

    paused = worker.pause(reason)
    click.echo("submissions paused cluster-wide; `disburse resume` restarts them")
    for name, why in paused.switches.items():
        click.echo(f"  paused: {pause_text(name, why)}")


@click.command()
def resume() -> None:
    """Restart submissions (every account, also one paused by the provider)."""
    import worker

    resumed = worker.resume()
    click.echo(f"resumed; {resumed.published} queued payouts published")
    for name, why in resumed.was_paused.items():
        click.echo(f"  was paused: {pause_text(name, why)}")
    if not resumed.was_paused:
        click.echo("  (nothing was paused)")


@click.command()
def reconcile() -> None:
    """One reconcile pass now (beat runs one every RECONCILE_EVERY seconds)."""
    from worker import runtime

    click.echo(runtime.reconciler().run_pass())
