"""Commands for the whole cluster: pause and resume submissions, reconcile now."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from worker.cli.common import pause_text

if TYPE_CHECKING:
    from worker.coordination.pause import PauseSwitch
    from worker.coordination.pause_store import PauseRecord


def _switch(market: str | None) -> PauseSwitch | None:
    """The pause switch of ``market``'s provider account (None: the cluster-wide one)."""
    if market is None:
        return None
    from worker.celery import runtime
    from worker.core.config import get_settings

    return runtime.pause_switch(get_settings().account(market.upper()))


@click.command()
@click.option("--reason", default="paused by an operator", help="Said by status and resume.")
@click.option("--operator", help="Who pauses (default: DISBURSE_OPERATOR, else the login name).")
@click.option("--market", help="Only the provider account of this market.")
def pause(reason: str, operator: str | None, market: str | None) -> None:
    """Stop all submissions, cluster-wide (every provider account).

    With --market, only that market's provider account. The pause is kept in PostgreSQL
    with who and why: a Redis restart or wipe does not lift it. Pausing again changes
    nothing: the first pause's reason stays, and the command says so.
    """
    from worker.celery import runtime

    switch = _switch(market)
    where = "cluster-wide" if switch is None else f"for provider account {switch.account}"
    paused = runtime.batch_controls().pause(reason, operator, switch=switch)
    if paused.already is not None:
        click.echo(f"already paused {where}, not changed: {_who(paused.already)}")
    else:
        click.echo(f"submissions paused {where}; `disburse resume` restarts them")
    for name, record in paused.records.items():
        click.echo(f"  paused: {pause_text(name, record.reason)} ({_who(record, why=False)})")


@click.command()
@click.option("--operator", help="Who resumes (default: DISBURSE_OPERATOR, else the login name).")
@click.option("--market", help="Only the provider account of this market.")
def resume(operator: str | None, market: str | None) -> None:
    """Restart submissions (every account, also one paused by the provider).

    With --market, only that market's provider account (a cluster-wide pause stays).
    """
    from worker.celery import runtime

    resumed = runtime.batch_controls().resume(operator, switch=_switch(market))
    click.echo(f"resumed; {resumed.published} queued payouts published (by {resumed.by})")
    for name, record in resumed.records.items():
        click.echo(f"  was paused: {pause_text(name, record.reason)} ({_who(record, why=False)})")
    if not resumed.records:
        click.echo("  (nothing was paused)")


def _who(record: PauseRecord, *, why: bool = True) -> str:
    """Who set a pause and since when (and why)."""
    since = f" since {record.since:%Y-%m-%d %H:%M:%S %Z}" if record.since is not None else ""
    said = f"by {record.who}{since}"
    return f"{said}: {record.reason}" if why else said


@click.command()
def reconcile() -> None:
    """One reconcile pass now (beat runs one every RECONCILE_EVERY seconds)."""
    from worker.celery import runtime

    click.echo(runtime.reconciler().run_pass())
