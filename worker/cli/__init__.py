"""The ``disburse`` command (also ``python -m worker``), on click.

Each command lives in the module of its topic; this one builds the group, turns the
errors a user can meet into one line and an exit code (see :mod:`worker.cli.common`),
and registers the commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
import psycopg
import redis

from worker import __version__
from worker.cli import batch, db, enqueue, events, local, operate, review
from worker.cli.common import SystemProblem, UserError
from worker.core.exceptions import ConfigError, SchemaBehind
from worker.core.redact import mask_text

ENVIRONMENT = """\b
Environment (a .env file in the current directory may supply it):
  DATABASE_URL        PostgreSQL, the ledger
  REDIS_URL           Redis: broker, rate limiters, token, locks
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
  DISBURSE_OPERATOR   the name `disburse resolve` records (else the login name)
  METRICS_PORT, METRICS_HOST
                      the web process's own listener for /metrics and /healthz
  PG_STATEMENT_TIMEOUT, PG_LOCK_TIMEOUT, PG_IDLE_IN_TRANSACTION_TIMEOUT
                      PostgreSQL session limits, in seconds (0: none)
  DISBURSE_OPERATOR   the name `disburse resolve`, pause, resume record (else the login name)
  SYSTEMIC_CODES      submit refusal codes that pause the account (4001,4002,4003)
  BREAKER_REJECTIONS, BREAKER_WINDOW
                      first attempts refused within seconds that pause the account (5, 30)
"""


class DisburseGroup(click.Group):
    """Maps the errors of every command to one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from worker.celery import runtime

        runtime.interactive()  # a person waits: a server that does not answer fails in seconds
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.show()  # and exit 1: click's own 2 would read as a system problem
            raise click.exceptions.Exit(UserError.exit_code) from None
        except ConfigError as exc:
            raise SystemProblem(f"configuration: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            from worker.core.config import get_settings

            url = mask_text(get_settings().redis_url)
            raise SystemProblem(f"cannot reach Redis at {url} ({_first_line(exc)})") from None
        except redis.RedisError as exc:
            from worker.core.config import get_settings

            url = mask_text(get_settings().redis_url)
            raise SystemProblem(
                f"Redis at {url} answered {type(exc).__name__}: is it a Redis server?"
            ) from None
        except psycopg.OperationalError as exc:  # psycopg_pool.PoolTimeout too
            from worker.core.config import get_settings
            from worker.db.readiness import unreachable

            raise SystemProblem(unreachable(get_settings().database_url, exc)) from None
        except psycopg.ProgrammingError:  # a table or column this code reads is missing
            from worker.core.config import get_settings
            from worker.db.readiness import check_schema

            try:
                check_schema(get_settings().database_url)
            except SchemaBehind as behind:  # the usual cause: say what to run
                raise SystemProblem(str(behind)) from None
            raise
        except OSError as exc:
            if exc.filename is None:
                raise
            raise UserError(f"{exc.filename}: {exc.strerror or exc}") from None


def _first_line(exc: BaseException) -> str:
    return mask_text(next(iter(str(exc).splitlines()), "") or type(exc).__name__)


@click.group(cls=DisburseGroup, epilog=ENVIRONMENT)
@click.version_option(__version__, prog_name="disburse", message="%(prog)s %(version)s")
def main() -> None:
    """Bulk payouts through a payout provider's API, on Celery, Redis and PostgreSQL.

    \b
    A first run, everything on this machine:
      disburse demo
    """


for command in (
    enqueue.enqueue,
    batch.status,
    batch.export,
    batch.approve,
    batch.cancel,
    batch.batches,
    enqueue.fields,
    enqueue.template,
    operate.pause,
    operate.resume,
    operate.reconcile,
    db.db,
    local.sandbox,
    local.demo,
    local.up,
):
    main.add_command(command)
main.add_command(events.events)
main.add_command(review.review)
main.add_command(review.resolve)
main.add_command(review.retry)


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``disburse`` with ``argv`` (default: the process's arguments); the exit status."""
    try:
        main.main(args=list(argv) if argv is not None else None, prog_name="disburse")
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return 0
