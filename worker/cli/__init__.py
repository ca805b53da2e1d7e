"""The ``disburse`` command (also ``python -m worker``), on click.

Each command lives in the module of its topic; this one builds the group, turns the
errors a user can meet into one line and an exit code (see :mod:`worker.cli.common`),
and names the commands. A command's module is imported only when that command runs, and
the libraries of PostgreSQL, Redis and Celery only when it needs them: ``--version`` and
``--help`` load click alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import click

from worker.cli.common import SystemProblem, UserError
from worker.core.redact import mask_text

# Every command: the module of worker.cli that defines it (under the command's name) and
# the first paragraph of its help, which `disburse --help` shows without importing the
# module (tests/unit/cli/test_cli_start.py checks that both agree with the command).
COMMANDS: dict[str, tuple[str, str]] = {
    "approve": ("batch", "Approve a held BATCH; it is released once nothing else holds it."),
    "audit": ("audit", "Who did what: every operator action, oldest first."),
    "batches": ("batch", "List batches, newest first, with their counts per state."),
    "console": ("console", "The operations console in the browser (CONSOLE_HOST:CONSOLE_PORT)."),
    "cancel": (
        "batch",
        "Cancel the payouts of BATCH never sent to the provider (HELD, or QUEUED and never "
        "POSTed).",
    ),
    "db": ("db", "The ledger's database schema (DATABASE_URL)."),
    "demo": ("local", "The whole system end to end on this machine, on private servers."),
    "enqueue": ("enqueue", "Validate FILE and enqueue its payouts as one batch."),
    "events": (
        "events",
        "The payouts' events as the application gets them, oldest first, each with where its "
        "webhook stands.",
    ),
    "export": ("batch", "One CSV row per payout of BATCH, for people and spreadsheets."),
    "failover": (
        "local",
        "Fail over a server of `disburse up --replicated` (on this machine only).",
    ),
    "fields": ("enqueue", "The columns of each market's rows file, as Markdown tables."),
    "payout": (
        "payout",
        "One payout found by its reference or tradeNo: state, history, provider ids and "
        "operator notes.",
    ),
    "pause": ("operate", "Stop all submissions, cluster-wide (every provider account)."),
    "reconcile": (
        "operate",
        "One reconcile pass now (beat runs one every RECONCILE_EVERY seconds).",
    ),
    "resolve": ("review", "Decide a payout in REVIEW: --succeeded or --failed."),
    "resume": (
        "operate",
        "Restart submissions (every account, also one paused by the provider).",
    ),
    "retry": ("review", "Enqueue BATCH's FAILED and REVERSED payouts again, as a new batch."),
    "review": (
        "review",
        "List the payouts waiting for a person (REVIEW), the longest waiting first, with why "
        "and what the provider last said.",
    ),
    "sandbox": (
        "local",
        "The local payout provider simulator (`disburse sandbox --help` lists its knobs).",
    ),
    "status": ("batch", "Where BATCH stands; --watch follows it with a progress bar."),
    "template": ("enqueue", "Write a sample rows file that `disburse enqueue` accepts."),
    "users": ("users", "The operations console's users and their roles."),
    "up": ("local", "The whole system on this machine for your own files, until Ctrl-C."),
}

ENVIRONMENT = """\b
Environment (a .env file in the current directory may supply it):
  DATABASE_URL        PostgreSQL, the ledger
  REDIS_URL           Redis: broker, rate limiters, token, locks (sentinel:// too)
  REDIS_SENTINEL_MASTER
                      the master's name at the Sentinels (mymaster)
  CELERY_BROKER_URL   optional broker override, e.g. amqp:// for RabbitMQ
  VEXORA_BASE_URL, VEXORA_MERCHANT_NO, VEXORA_APP_SECRET, VEXORA_RATE_LIMIT
                      the payout API (VEXORA_<MARKET>_* for one market's account)
  DETAILS_BASE_URL, DETAILS_API_KEY, DETAILS_CLIENT_ID, DETAILS_CLIENT_SECRET,
  DETAILS_ACCOUNT_ID, DETAILS_RATE_LIMIT
                      the disbursement-details API
  DETAILS_PATH, DETAILS_LIST_PATH
                      the details API's paths
  NOTIFY_URL          public URL of this system's webhook receiver (https for JP, KH)
  ALLOW_UNSIGNED_WEBHOOKS
                      unsigned notifications only trigger a query
  RECONCILE_EVERY, RECONCILE_AFTER, REVIEW_AFTER, SWEEP_AFTER
                      reconcile timing, in seconds
  HTTP_CONNECT_TIMEOUT, HTTP_READ_TIMEOUT
                      every provider call, in seconds
  SUBMIT_BUDGET, LOOKUP_BUDGET
                      seconds a submit or lookup task works before handing on
  SUBMIT_CONCURRENCY  POSTs a submit task keeps in flight at once (32)
  DISBURSE_KEY_PREFIX the first part of every Redis key
  APP_WEBHOOK_URL, APP_WEBHOOK_SECRET
                      where and how payouts' events are sent to the application
  RECONCILE_WALK_AT   due orders from which a pass walks the paged list (0: never)
  NOT_FOUND_CODES     status query codes meaning "no such order" (4004)
  NO_RECORD_GRACE     seconds "no record" must hold before a resubmission (30)
  QUERY_DELAY         seconds after a POST with no outcome before it is asked about (5)
  LEASE_TTL           seconds a task's hold on its payouts lasts unless renewed (15)
  FAILED_PAYLOAD_RETENTION
                      how long a FAILED payout keeps its fields for a retry (7d)
  IDEMPOTENCY_WINDOW  how long a batch's key (a file's digest) returns that batch (30d)
  CONSOLE_PORT, CONSOLE_HOST
                      the operations console (127.0.0.1:8702)
  CONSOLE_TRUSTED_HEADER, CONSOLE_TRUSTED_PROXIES
                      a proxy's header naming the signed-in user, and the proxies
  METRICS_PORT, METRICS_HOST
                      the web process's own listener for /metrics and /healthz
  PG_STATEMENT_TIMEOUT, PG_LOCK_TIMEOUT, PG_IDLE_IN_TRANSACTION_TIMEOUT
                      PostgreSQL session limits, in seconds (0: none)
  DISBURSE_OPERATOR   who runs the command, in the audit trail (else the login name)
  DISBURSE_POLICY     the approvals and limits policy file (TOML)
  APPROVALS_REQUIRE_LOGIN
                      approvals only from an authenticated console session
  SYSTEMIC_CODES      submit refusal codes that pause the account (4001,4002,4003)
  BREAKER_REJECTIONS, BREAKER_WINDOW
                      first attempts refused within seconds that pause the account (5, 30)
"""


class DisburseGroup(click.Group):
    """Imports each command when it is asked for (COMMANDS), and maps the errors of every
    command to one line on stderr and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"{__name__}.{COMMANDS[cmd_name][0]}")
            self.add_command(getattr(module, cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own list of the commands, from COMMANDS' help: no module imported."""
        listed = [click.Command(name, help=help) for name, (_, help) in COMMANDS.items()]
        click.Group(commands=listed).format_commands(ctx, formatter)

    def invoke(self, ctx: click.Context) -> Any:
        from worker.celery import runtime

        runtime.interactive()  # a person waits: a server that does not answer fails in seconds
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.show()  # and exit 1: click's own 2 would read as a system problem
            raise click.exceptions.Exit(UserError.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            problem = _problem(exc)
            if problem is None:
                raise
            raise problem from None


def _problem(exc: Exception) -> UserError | None:
    """The one line ``exc`` is to a user, or None when it is no error a user can meet.

    The libraries named are imported here, once something failed: a command that never
    needed them did not load them.
    """
    import psycopg
    import redis

    from worker.core.config import get_settings
    from worker.core.exceptions import ConfigError, SchemaBehind

    if isinstance(exc, ConfigError):
        return SystemProblem(f"configuration: {exc}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        url = mask_text(get_settings().redis_url)
        return SystemProblem(f"cannot reach Redis at {url} ({_first_line(exc)})")
    if isinstance(exc, redis.RedisError):
        url = mask_text(get_settings().redis_url)
        return SystemProblem(f"Redis at {url} answered {type(exc).__name__}: is it a Redis server?")
    if isinstance(exc, psycopg.OperationalError):  # psycopg_pool.PoolTimeout too
        from worker.db.readiness import unreachable

        return SystemProblem(unreachable(get_settings().database_url, exc))
    if isinstance(exc, psycopg.ProgrammingError):  # a table or column this code reads is missing
        from worker.db.readiness import check_schema

        try:
            check_schema(get_settings().database_url)
        except SchemaBehind as behind:  # the usual cause: say what to run
            return SystemProblem(str(behind))
        return None
    if isinstance(exc, OSError) and exc.filename is not None:
        return UserError(f"{exc.filename}: {exc.strerror or exc}")
    return None


def _first_line(exc: BaseException) -> str:
    return mask_text(next(iter(str(exc).splitlines()), "") or type(exc).__name__)


@click.group(cls=DisburseGroup, epilog=ENVIRONMENT)
# The version is read from the distribution's metadata only when it is asked for.
@click.version_option(package_name="disburse", prog_name="disburse", message="%(prog)s %(version)s")
def main() -> None:
    """Bulk payouts through a payout provider's API, on Celery, Redis and PostgreSQL.

    \b
    A first run, everything on this machine:
      disburse demo
    """


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``disburse`` with ``argv`` (default: the process's arguments); the exit status."""
    try:
        main.main(args=list(argv) if argv is not None else None, prog_name="disburse")
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return 0
