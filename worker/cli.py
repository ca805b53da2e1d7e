"""The ``disburse`` command (also ``python -m worker``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
import redis

from worker.exceptions import ConfigError, InputError, SchemaBehind
from worker.redact import mask_text


def _enqueue(args: argparse.Namespace) -> int:
    from worker import runtime
    from worker.rows import read_rows

    try:
        rows, parse_errors = read_rows(Path(args.file))
        result = runtime.producer().enqueue_batch(
            args.market,
            rows,
            parse_errors=parse_errors,
            skip_invalid=args.skip_invalid,
            hold=args.hold,
            dry_run=args.dry_run,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        for error in result.rejected:
            for name, messages in error.errors.items():
                print(f"row {error.row}: {name}: {' '.join(messages)}", file=sys.stderr)
        if result.dry_run:
            print(f"dry run: {result.accepted} payouts valid and signed; nothing enqueued")
        elif result.batch_id is None:
            print(f"nothing enqueued: {len(result.rejected)} invalid rows", file=sys.stderr)
        else:
            state = "held for approval" if result.held else "queued"
            print(f"batch {result.batch_id}: {result.accepted} payouts {state}", end="")
            print(f", {result.existing} already enqueued" if result.existing else "", end="")
            print(f", {len(result.rejected)} rows skipped" if result.rejected else "")
    return 1 if result.rejected and not args.skip_invalid else 0


def _status(args: argparse.Namespace) -> int:
    from worker import report, runtime

    ledger = runtime.ledger()
    summary = ledger.batch(args.batch)
    if summary is None:
        print(f"error: no batch {args.batch}", file=sys.stderr)
        return 1
    if args.watch:
        while True:
            print("\r" + report.batch_progress(summary), end="", flush=True)
            if summary.settled:
                print()
                break
            time.sleep(args.interval)
            summary = ledger.batch(args.batch) or summary
    data = report.status_dict(ledger, summary, details=not args.counts_only)
    data["paused"] = _pause_of(summary.market)
    if args.json:
        print(json.dumps(data))
    elif not args.watch:
        print(report.status_text(data))
    if data["paused"] and not args.json:
        print(f"PAUSED: {_pause_text(data['paused']['account'], data['paused']['reason'])}")
    return 0


def _pause_of(market: str) -> dict[str, str] | None:
    """What stops the submissions of ``market``: the cluster-wide or its account's switch."""
    from worker import runtime
    from worker.config import get_settings
    from worker.pause import ALL

    paused = runtime.pause_switch().paused()
    names = [ALL]
    # A market this configuration does not know has only the cluster-wide switch.
    with contextlib.suppress(ValueError):
        names.append(get_settings().account(market).name)
    return next(({"account": n, "reason": paused[n]} for n in names if n in paused), None)


def _pause_text(name: str, reason: str) -> str:
    from worker.pause import ALL

    return f"{'every provider account' if name == ALL else f'provider account {name}'}: {reason}"


def _export(args: argparse.Namespace) -> int:
    from worker import report, runtime

    ledger = runtime.ledger()
    if ledger.batch(args.batch) is None:
        print(f"error: no batch {args.batch}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            rows = report.export_csv(ledger, [args.batch], out)
        print(f"wrote {rows} payouts to {args.output}")
    else:
        report.export_csv(ledger, [args.batch], sys.stdout)
    return 0


def _approve(args: argparse.Namespace) -> int:
    import worker

    try:
        result = worker.approve(args.batch, check_balance=not args.no_balance_check)
    except worker.BatchNotFound:
        print(f"error: no batch {args.batch}", file=sys.stderr)
        return 1
    print(result.message)
    return 0 if result.held is None else 2


def _cancel(args: argparse.Namespace) -> int:
    import worker

    try:
        print(worker.cancel(args.batch).message)
    except worker.BatchNotFound:
        print(f"error: no batch {args.batch}", file=sys.stderr)
        return 1
    return 0


def _pause(args: argparse.Namespace) -> int:
    import worker

    paused = worker.pause(args.reason)
    print("submissions paused cluster-wide; `disburse resume` restarts them")
    for name, reason in paused.switches.items():
        print(f"  paused: {_pause_text(name, reason)}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    import worker

    resumed = worker.resume()
    print(f"resumed; {resumed.published} queued payouts published")
    for name, reason in resumed.was_paused.items():
        print(f"  was paused: {_pause_text(name, reason)}")
    if not resumed.was_paused:
        print("  (nothing was paused)")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from worker import runtime

    print(runtime.reconciler().run_pass())
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from worker import sandbox

    return sandbox.run(args)


def _db_upgrade(args: argparse.Namespace) -> int:
    from worker.config import get_settings
    from worker.db import migrate

    url = get_settings().database_url
    applied = set(migrate.upgrade(url))
    for migration in migrate.migrations():
        if migration.version in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        print(f"up to date: {mask_text(url)}")
    return 0


def _db_status(args: argparse.Namespace) -> int:
    from worker.config import get_settings
    from worker.db import migrate

    url = get_settings().database_url
    current = migrate.current_version(url)
    newest = max((migration.version for migration in migrate.migrations()), default=0)
    print(f"{mask_text(url)}: schema version {current:04d}, this code's {newest:04d}")
    try:
        migrate.check(url)
    except SchemaBehind as exc:
        print(f"behind: {exc}")
        return 1
    print("up to date" if current == newest else "up to date (the schema is newer than this code)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from worker.dev import demo

    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="disburse", description="Bulk payouts on Celery + Redis")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enqueue", help="validate a CSV / JSON Lines file and enqueue its payouts")
    p.add_argument("file")
    p.add_argument("--market", required=True, help="ID, AR, JP or KH")
    p.add_argument("--skip-invalid", action="store_true", help="enqueue the valid rows anyway")
    p.add_argument("--dry-run", action="store_true", help="validate and sign, enqueue nothing")
    p.add_argument("--hold", action="store_true", help="create the batch HELD for approval")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_enqueue)

    p = sub.add_parser("status", help="where a batch stands")
    p.add_argument("batch")
    p.add_argument("--watch", action="store_true", help="live progress until the batch settles")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--counts-only", action="store_true", help="skip the per-order details")
    p.set_defaults(run=_status)

    p = sub.add_parser("export", help="one CSV row per payout")
    p.add_argument("batch")
    p.add_argument("--output", "-o")
    p.set_defaults(run=_export)

    p = sub.add_parser("approve", help="release a held batch (after a balance check)")
    p.add_argument("batch")
    p.add_argument("--no-balance-check", action="store_true")
    p.set_defaults(run=_approve)

    p = sub.add_parser("cancel", help="cancel every payout of a batch not yet sent")
    p.add_argument("batch")
    p.set_defaults(run=_cancel)

    p = sub.add_parser("pause", help="stop all submissions, cluster-wide (every account)")
    p.add_argument("--reason", default="paused by an operator")
    p.set_defaults(run=_pause)
    sub.add_parser(
        "resume", help="restart submissions (every account, also one paused by the provider)"
    ).set_defaults(run=_resume)
    sub.add_parser("reconcile", help="one reconcile pass now").set_defaults(run=_reconcile)

    p = sub.add_parser("sandbox", help="the local provider simulator")
    from worker.sandbox import add_arguments

    add_arguments(p)
    p.set_defaults(run=_sandbox)

    p = sub.add_parser("db", help="the ledger's database schema (DATABASE_URL)")
    db = p.add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply every pending schema migration").set_defaults(
        run=_db_upgrade
    )
    db.add_parser("status", help="the schema's version against this code's").set_defaults(
        run=_db_status
    )

    p = sub.add_parser("demo", help="the whole system end to end on this machine")
    p.add_argument("--payouts", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--output", default="demo-results.csv")
    p.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except redis.ConnectionError:
        from worker.config import get_settings

        print(
            f"error: cannot reach Redis at {mask_text(get_settings().redis_url)}", file=sys.stderr
        )
        return 2
    except psycopg.OperationalError as exc:  # psycopg_pool.PoolTimeout too
        from worker.config import get_settings
        from worker.db.readiness import unreachable

        print(f"error: {unreachable(get_settings().database_url, exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
