"""``disburse demo``: the main job, end to end, on this machine.

Starts a private Redis, a private PostgreSQL (or uses the one ``DATABASE_URL`` names;
either way its schema is upgraded first), the sandbox provider, the webhook receiver,
worker processes and beat; enqueues a sample batch in each market (with a few invalid
rows, reported and not sent) through the same CSV import the CLI uses; shows progress
until every payout is final; prints a summary; writes a results CSV; stops everything
it started, keeping the results and each process's log where it says they are.

What is simulated is said so: the sandbox settles about 5% of payouts FAILED on
purpose, and a few rows of each file are broken on purpose.
"""

from __future__ import annotations

import csv
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.core.redact import mask_text
from worker.sandbox import SandboxConfig

if TYPE_CHECKING:
    from worker.dev.cluster import LocalCluster

MARKETS = ("ID", "AR", "JP", "KH")
FAILURE_RATIO = 0.05  # payouts the sandbox settles FAILED on purpose
# One broken row per problem a user makes, in each market's file (each broken in every
# market: 12.345 is no amount in a whole-number currency nor in USD).
_BROKEN = [
    ("amount", "12.345"),
    ("email", "not-an-email"),
    ("mobile", "12"),
]


def _write_samples(directory: Path, per_market: int) -> dict[str, Path]:
    from worker.core.samples import sample_rows

    files = {}
    for market in MARKETS:
        rows = sample_rows(market, per_market, seed=2026)
        for index, (column, value) in enumerate(_BROKEN):
            rows[(index * 97 + 5) % len(rows)][column] = value
        path = directory / f"payouts-{market.lower()}.csv"
        columns = sorted({key for row in rows for key in row})
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        files[market] = path
    return files


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(
    *,
    payouts: int,
    workers: int,
    output: Path,
    log_dir: Path,
    latency_median: float = 0.0,
    latency_sigma: float = 0.6,
) -> int:
    """``latency_median`` > 0: the sandbox answers after a lognormal wait, as a real
    provider does (SandboxConfig.latency_median)."""
    from worker.dev.cluster import LocalCluster, refuse_open_payouts
    from worker.dev.first_login import console_lines

    sandbox = SandboxConfig(
        settle_delay=(0.3, 2.0),
        failure_ratio=FAILURE_RATIO,
        seed=2026,
        webhook_time_scale=0.05,
        latency_median=latency_median,
        latency_sigma=latency_sigma,
    )
    env = {"VEXORA_RATE_LIMIT": "250/s", "DETAILS_RATE_LIMIT": "100/s"}
    database_url = os.environ.get("DATABASE_URL") or None
    if database_url is not None:
        code = refuse_open_payouts(database_url)
        if code:
            return code
    signal.signal(signal.SIGTERM, _terminate)
    database = (
        "private PostgreSQL" if database_url is None else f"PostgreSQL at {mask_text(database_url)}"
    )
    slow = (
        f" (answering in a median {latency_median:g} s, sigma {latency_sigma:g})"
        if latency_median
        else ""
    )
    print(f"starting: private Redis, {database}, sandbox provider{slow}, webhook receiver, "
          f"{_count(workers, 'worker')}, beat ...", flush=True)  # fmt: skip
    log_dir = log_dir.resolve()
    cluster = LocalCluster(
        workers=workers,
        database_url=database_url,
        sandbox=sandbox,
        env=env,
        log_dir=log_dir,
        console=True,
    )
    try:
        cluster.start()
        os.environ.update(cluster.env())
        from worker.celery import runtime

        runtime.reset()
        cluster.wait_ready()
        for said in console_lines(cluster.console_url):
            print(f"console: {said}", flush=True)
        return _run_batches(cluster, payouts, output.resolve())
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        cluster.close()
        print("stopped: every process and server the demo started")
        print(f"logs: {log_dir} (web.log, worker0.log, ..., beat0.log)")


def _run_batches(cluster: LocalCluster, payouts: int, output: Path) -> int:
    from worker.celery import runtime
    from worker.core.rows import read_rows
    from worker.flows import report

    ledger = runtime.ledger()
    producer = runtime.producer()
    batches: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_samples(Path(tmp), payouts // len(MARKETS) + len(_BROKEN))
        for market, path in files.items():
            rows, parse_errors = read_rows(path)
            result = producer.enqueue_batch(
                market, rows, parse_errors=parse_errors, skip_invalid=True
            )
            for error in result.rejected:
                fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in error.errors.items())
                print(f"  {market} {path.name} line {error.row} rejected (broken on purpose): "
                      f"{fields}")  # fmt: skip
            assert result.batch_id is not None
            batches[market] = result.batch_id
            print(f"{market}: batch {result.batch_id}, {_count(result.accepted, 'payout')} queued")
    accepted_at = time.monotonic()

    live = sys.stdout.isatty()  # redrawn in place; into a file or pipe, a line each 2 s
    shown = float("-inf")
    while True:
        summaries = {m: ledger.batch(b) for m, b in batches.items()}
        total = sum(s.total for s in summaries.values() if s)
        done = sum(s.settled_count for s in summaries.values() if s)
        bar = report.progress_bar(done, total, suffix="final")
        if live:
            print("\r" + bar, end="", flush=True)
        elif done == total or time.monotonic() - shown >= 2:
            print(bar, flush=True)
            shown = time.monotonic()
        if done == total:
            break
        if time.monotonic() - started > 300:
            print("\nnot everything settled within 5 minutes", file=sys.stderr)
            return 1
        time.sleep(0.25)
    elapsed = time.monotonic() - accepted_at
    if live:
        print()

    counts: Counter[tuple[str, str]] = Counter()
    for market, summary in summaries.items():
        assert summary is not None
        for state, n in summary.counts.items():
            counts[(market, state.value)] += n
    states = sorted({s for _, s in counts})
    print(f"\n{'market':<8}" + "".join(f"{s:>11}" for s in states) + f"{'total':>9}")
    for market in MARKETS:
        row = [counts[(market, s)] for s in states]
        print(f"{market:<8}" + "".join(f"{n:>11}" for n in row) + f"{sum(row):>9}")
    assert cluster.sandbox is not None
    stats = cluster.sandbox.stats()
    total = sum(counts.values())
    print(f"\nthroughput: {total / elapsed:.0f} payouts/s ({total} in {elapsed:.1f} s)")
    print(f"sandbox: {stats['payouts']} payouts received, "
          f"duplicate payments: {stats['duplicate_payments']}, "
          f"webhooks delivered: {stats['webhooks_delivered']}")  # fmt: skip
    failed = sum(n for (_, state), n in counts.items() if state == "FAILED")
    print(
        f"simulated: {_count(failed, 'FAILED payout')} ({failed / total:.1%}) failed on purpose "
        f"at the sandbox provider, which fails about {FAILURE_RATIO:.0%} of payouts; the "
        f"{len(_BROKEN)} rejected rows per market are broken on purpose; no money moved"
    )

    with open(output, "w", newline="", encoding="utf-8") as out:
        report.export_csv(ledger, list(batches.values()), out)
    print(f"results: {output}")
    return 0 if stats["duplicate_payments"] == 0 else 1
