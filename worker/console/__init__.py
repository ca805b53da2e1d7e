"""The operations console: server-rendered pages (Flask, Jinja2; htmx for the live
parts) over the same functions as the command line. :mod:`~worker.console.app` builds
the WSGI app, :mod:`~worker.console.auth` signs people in and checks their role,
:mod:`~worker.console.pages` reads, :mod:`~worker.console.actions` acts."""
