"""``disburse console``: the operations console, served by waitress."""

from __future__ import annotations

import click


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), help="Default: CONSOLE_PORT (8702).")
@click.option("--host", help="Default: CONSOLE_HOST (127.0.0.1).")
def console(port: int | None, host: str | None) -> None:
    """The operations console in the browser (CONSOLE_HOST:CONSOLE_PORT).

    Sign in as a user of `disburse users add NAME --role R`.
    """
    from waitress import serve

    from worker.console.app import create_app
    from worker.core.config import get_settings

    settings = get_settings()
    host = host or settings.console_host
    port = settings.console_port if port is None else port
    click.echo(f"console on http://{host}:{port}/", err=True)
    serve(create_app(), host=host, port=port, threads=8, ident="disburse-console")
