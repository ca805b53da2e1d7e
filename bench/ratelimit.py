"""Case 3: rate-limit fidelity at 100/s with 1, 2 and 4 worker processes.

Ours: the cluster-wide limiter (``VEXORA_RATE_LIMIT=100/s``) on N celery worker
processes (concurrency 1 each). Baseline: Celery's own ``rate_limit="100/s"`` on a
one-task app (``bench.celery_baseline``) started as N worker processes too, posting
one payout per task. Both are counted by the sandbox provider: the achieved rate
between the first and the last POST it received (``received_at``), and the busiest
sliding one-second window (its ``max_payout_requests_per_second``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import MARKET, Context, Result, busiest_window, cluster, say, wait_handed_over

if TYPE_CHECKING:
    from worker.dev.cluster import LocalCluster

NAME = "ratelimit"
LIMIT = 100.0
TARGET_SHARE = 0.95
WORKER_COUNTS = (1, 2, 4)
ROOT = Path(__file__).resolve().parent.parent


def measure(local: LocalCluster) -> dict[str, float]:
    """Achieved rate and busiest window of what the sandbox received since its reset."""
    stamps = sorted(p["received_at"] for p in local.sandbox.payouts().values())
    span = stamps[-1] - stamps[0]
    return {
        "received": len(stamps),
        "span_s": span,
        "achieved_per_s": (len(stamps) - 1) / span if span > 0 else 0.0,
        "busiest_window": local.sandbox.stats()["max_payout_requests_per_second"],
        "busiest_window_received_at": busiest_window(stamps),
    }


def ours(local: LocalCluster, rows: list[dict[str, Any]], warm: int) -> dict[str, float]:
    import worker
    from worker.celery import runtime

    ledger = runtime.ledger()
    worker.enqueue_batch(MARKET, rows[:warm])
    wait_handed_over(ledger, warm, timeout=60)
    local.sandbox.reset()
    worker.enqueue_batch(MARKET, rows[warm:])
    # Polled slowly: the sandbox shares this process, and its timing is what is measured.
    wait_handed_over(ledger, len(rows), timeout=3 * len(rows) / LIMIT + 60, interval=0.2)
    return measure(local)


@contextlib.contextmanager
def baseline_workers(
    local: LocalCluster,
    count: int,
    *,
    app: str = "bench.celery_baseline",
    queue: str | None = None,
    extra: Sequence[str] = ("--concurrency=1",),
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Any, list[int]]]:
    """``count`` celery workers of a baseline ``app`` (a module; default the rate-limit
    baseline's, concurrency 1) on a second database of the same Redis; yields a Celery
    app to publish with and the workers' pids."""
    from celery import Celery

    from bench.celery_baseline import QUEUE

    assert local.redis is not None
    broker = local.redis.url.rsplit("/", 1)[0] + "/1"
    environ = {**os.environ, **(env or {}), "BENCH_BASELINE_BROKER": broker,
               "PYTHONPATH": str(ROOT)}  # fmt: skip
    celery = str(Path(sys.executable).with_name("celery"))
    processes = []
    logs = []
    for index in range(count):
        command = [celery, "-A", app, "worker", *extra, "-Q", queue or QUEUE,
                   f"--hostname=base{index}@%h", "--without-mingle", "--without-gossip",
                   "--loglevel=WARNING"]  # fmt: skip
        log = open(local.log_dir / f"baseline{index}.log", "ab")  # noqa: SIM115 - closed below
        logs.append(log)
        processes.append(
            subprocess.Popen(
                command,
                env=environ,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    publisher = Celery("bench_baseline_publisher", broker=broker)
    try:
        deadline = time.monotonic() + 60
        while len(publisher.control.ping(timeout=1.0) or []) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline workers did not come up; see {local.log_dir}")
        yield publisher, [process.pid for process in processes]
    finally:
        publisher.close()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs:
            log.close()


def baseline(local: LocalCluster, count: int, payloads: list[dict[str, str]]) -> dict[str, float]:
    from bench.celery_baseline import QUEUE, TASK

    with baseline_workers(local, count) as (app, _):
        local.sandbox.reset()
        with app.producer_or_acquire() as producer:
            for fields in payloads:
                app.send_task(TASK, args=(fields, uuid.uuid4().hex), queue=QUEUE, producer=producer)
        deadline = time.monotonic() + 3 * len(payloads) / LIMIT + 60
        while local.sandbox.stats()["payouts"] < len(payloads):
            if time.monotonic() > deadline:
                raise TimeoutError("baseline: not every payout reached the sandbox")
            time.sleep(0.1)
    return measure(local)


def _text(m: dict[str, float]) -> str:
    return f"{m['achieved_per_s']:.1f}/s, max {m['busiest_window']:.0f} in 1 s"


def run(ctx: Context) -> list[Result]:
    from schemas import validate_rows
    from worker.core.config import get_settings
    from worker.core.samples import sample_rows

    n = ctx.size(2_000, 300)
    warm = 20
    results = []
    for count in WORKER_COUNTS:
        rows = sample_rows(MARKET, warm + n, seed=100 + count)
        with cluster(workers=count, rate_limit=f"{LIMIT:g}/s") as local:
            say(f"ratelimit: {count} worker(s), ours, {n:,} orders at {LIMIT:g}/s")
            mine = ours(local, rows, warm)
            valid, _ = validate_rows(
                MARKET, enumerate(rows[warm:]), notify_url=get_settings().notify_url
            )
            say(f"ratelimit: {count} worker(s), Celery rate_limit baseline, {n:,} tasks")
            base = baseline(local, count, [payout.fields for _, payout in valid])
        share = mine["achieved_per_s"] / LIMIT
        passed = share >= TARGET_SHARE and mine["busiest_window"] <= LIMIT
        notes = []
        if count == WORKER_COUNTS[0]:
            notes.append(
                f"ratelimit: {n:,} payouts per run; achieved = (received - 1) / (last - first "
                f"received_at); busiest window = the sandbox's max POSTs in any sliding 1 s."
            )
        results.append(
            Result(
                case=f"rate limit {LIMIT:g}/s, {count} worker process{'es' if count > 1 else ''}",
                ours=_text(mine),
                baseline=_text(base),
                ratio=f"{share:.3f} of limit",
                target=f">= {TARGET_SHARE * LIMIT:g}/s, max <= {LIMIT:g}",
                passed=passed,
                notes=notes,
                raw={"workers": count, "ours": mine, "baseline": base},
            )
        )
    return results
