"""Case: a slow provider (issue 23). The sandbox answers after a lognormal wait (median
250 ms, sigma 0.6, as a real payout API does) and each configuration pays the same
payouts under a rate limit; one table, every row beside the limit it was given.

Rows (each on fresh servers: Redis, PostgreSQL, the sandbox in this process):

- ours, the Procfile's defaults: its ``worker`` line run twice (2 celery workers,
  ``--concurrency=4``), ``beat`` and ``web``, limit 100/s, SUBMIT_CONCURRENCY unset.
- ours at 400/s, once per ``--processes`` value (worker processes of ``--concurrency=4``),
  SUBMIT_CONCURRENCY ``--concurrency`` (unset: its default).
- "today's prefork submission": the Procfile row again with SUBMIT_CONCURRENCY=1, one
  POST at a time per pool process (what main did before the variable existed).
- "naive Celery": one Celery task per payout (``bench.naive_celery``) on one
  ``--pool threads`` worker with as many threads as ours has POSTs in flight, paced by
  Celery's own ``rate_limit``.
- "raw loop": the same ``VexoraClient`` in a process of its own, as many threads as
  ours has POSTs in flight, paced exactly at the limit: what the client can physically
  do; ours should reach 0.8 of it.

Measured per row: payouts the sandbox accepted / seconds from the enqueue (or the
first request) until the last was answered, or until the row's time cap (1.25x the
time the limit allows + 10 s; the row then says "capped"); the busiest sliding second
of POSTs the sandbox received (never above the limit); RSS summed over the
processes that POST (worker mains and pool children; the naive worker; the raw loop)
at the end; their CPU seconds (user + system) per payout.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import paced_loop
from bench.common import MARKET, Context, Result, cluster, process_tree_rss, say, worker_pids

if TYPE_CHECKING:
    from worker.dev.cluster import LocalCluster
    from worker.sandbox import SandboxConfig

NAME = "slow_provider"
MEDIAN, SIGMA = 0.25, 0.6  # seconds, and the spread of exp(sigma * N(0, 1))
LIMIT, HIGH_LIMIT = 100, 400  # payouts/s
DEFAULT_PAYOUTS = 5_000
DEFAULT_PROCESSES = (1, 2)  # worker processes tried at HIGH_LIMIT
PROCFILE_WORKERS = 2  # the Procfile's worker line, run twice
WARM = 20  # payouts through a fresh cluster before measuring: imports, pools, tokens
TARGET_PROCFILE, TARGET_HIGH, TARGET_OF_RAW = 0.95, 0.9, 0.8  # issue 23 Targets


@dataclass
class Row:
    """One line of the table: a configuration and what it achieved."""

    label: str
    role: str  # "ours", "baseline" or "raw"
    limit: int
    in_flight: int  # requests it may keep in flight (ours: processes x pool x SUBMIT_CONCURRENCY)
    paid: int = 0  # payouts the sandbox accepted in the measured time
    seconds: float = 0.0
    busiest: int = 0
    rss: int = 0
    cpu: float = 0.0
    capped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.paid / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float:
        return self.rate / self.limit


def cap_for(payouts: int, limit: int) -> float:
    """The longest a row may take: enough for 0.8 of the limit, then the row is cut."""
    return 1.25 * payouts / limit + 10.0


def slow_sandbox(*, webhooks: bool) -> SandboxConfig:
    """The provider of every row: slow answers; payouts settle 1-3 s after acceptance,
    told by webhook to ours (the baselines have no receiver)."""
    from bench.common import quiet_sandbox

    return quiet_sandbox(
        latency_median=MEDIAN, latency_sigma=SIGMA, webhooks=webhooks, settle_delay=(1.0, 3.0)
    )


def procfile_concurrency() -> int:
    """The pool size on the Procfile's worker line (``--concurrency=N``)."""
    from worker.dev.cluster import procfile_commands

    for part in procfile_commands()["worker"]:
        if part.startswith("--concurrency="):
            return int(part.split("=", 1)[1])
    raise RuntimeError("the Procfile's worker line names no --concurrency")


def default_submit_concurrency() -> int:
    """SUBMIT_CONCURRENCY as the workers will read it: this environment's (they inherit
    it), else the setting's default once it exists, else 1 (one POST at a time per pool
    process, as before it existed)."""
    from worker.core.settings import Settings

    given = os.environ.get("SUBMIT_CONCURRENCY", "").strip()
    return int(given) if given else int(getattr(Settings(), "submit_concurrency", 1))


# --- measuring processes ---------------------------------------------------------------


def _tree(pids: Sequence[int]) -> list[Any]:
    import psutil

    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            processes += [root, *root.children(recursive=True)]
    return processes


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of each process in these trees, by pid."""
    import psutil

    seen: dict[int, float] = {}
    for process in _tree(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            seen[process.pid] = times.user + times.system
    return seen


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(spent - before.get(pid, 0.0) for pid, spent in after.items())


# --- ours ------------------------------------------------------------------------------


def _rows(n: int, seed: int, start: int = 0) -> list[dict[str, Any]]:
    from worker.core.samples import sample_rows

    return sample_rows(MARKET, n, seed=seed, start=start)


def _wait_paid(local: LocalCluster, total: int, deadline: float) -> bool:
    """Until the sandbox has accepted ``total`` payouts (True) or the deadline (False)."""
    assert local.sandbox is not None
    while local.sandbox.stats()["payouts"] < total:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # this process serves the sandbox: poll gently
    return True


def timeline(local: LocalCluster, started: float, payouts: int) -> dict[str, float | None]:
    """Seconds from ``started`` (wall clock) until 5, 50, 95 and 100 % of ``payouts`` were
    accepted (None: not in the measured time), and the steady pace: the rate between the
    5th and the 95th percentile of the payouts accepted, without the start and the tail."""
    assert local.sandbox is not None
    stamps = sorted(p["received_at"] - started for p in local.sandbox.payouts().values())
    marks: dict[str, float | None] = {}
    for pct in (5, 50, 95, 100):
        rank = max(1, round(payouts * pct / 100))
        marks[f"to_{pct}pct_s"] = stamps[rank - 1] if rank <= len(stamps) else None
    marks["steady_per_s"] = None
    low, high = round(len(stamps) * 0.05), round(len(stamps) * 0.95) - 1
    if high > low and stamps[high] > stamps[low]:
        marks["steady_per_s"] = (high - low) / (stamps[high] - stamps[low])
    return marks


def measure_ours(row: Row, local: LocalCluster, payouts: int) -> Row:
    """Enqueue ``payouts`` on a warmed-up cluster and time them to the provider."""
    import worker

    assert local.sandbox is not None
    # Rows of their own (references from a million on): a reference enqueued again would
    # return the warm-up's order, and the measured batch would be short of it.
    worker.enqueue_batch(MARKET, _rows(WARM, seed=230, start=1_000_000))
    if not _wait_paid(local, WARM, time.monotonic() + 120):
        raise TimeoutError(f"{row.label}: the warm-up did not reach the provider")
    time.sleep(1.0)  # the warm-up's last answers and settlements
    local.sandbox.reset()
    pids = worker_pids(local)
    rows = _rows(payouts, seed=231)
    cpu_before = cpu_seconds(pids)
    started, wall = time.monotonic(), time.time()
    worker.enqueue_batch(MARKET, rows)
    done = _wait_paid(local, payouts, started + cap_for(payouts, row.limit))
    row.seconds = time.monotonic() - started
    stats = local.sandbox.stats()
    row.paid, row.busiest = stats["payouts"], stats["max_payout_requests_per_second"]
    row.capped = not done
    row.cpu = cpu_spent(cpu_before, cpu_seconds(pids))
    row.rss = process_tree_rss(pids)
    row.extra = {"rate_limited": stats.get("rate_limited", 0), "posts": stats["payout_requests"],
                 **timeline(local, wall, payouts)}  # fmt: skip
    if not done:
        worker.pause("bench: the row's time cap", operator="bench")  # a quick shutdown
    return row


def ours(
    label: str,
    *,
    role: str,
    limit: int,
    workers: int,
    payouts: int,
    submit_concurrency: int | None,
) -> Row:
    pool = procfile_concurrency()
    per_task = default_submit_concurrency() if submit_concurrency is None else submit_concurrency
    env = {} if submit_concurrency is None else {"SUBMIT_CONCURRENCY": str(submit_concurrency)}
    row = Row(label, role, limit, in_flight=workers * pool * per_task)
    say(f"slow_provider: {label}: {payouts:,} payouts, {row.in_flight} POSTs may be in flight")
    with cluster(
        workers=workers,
        concurrency=pool,
        rate_limit=f"{limit}/s",
        sandbox=slow_sandbox(webhooks=True),
        beat=True,
        web=True,
        env=env,
    ) as local:
        return measure_ours(row, local, payouts)


# --- the naive Celery baseline ----------------------------------------------------------


def _payloads(n: int, seed: int) -> list[dict[str, str]]:
    from schemas import validate_rows
    from worker.core.config import get_settings

    notify_url = get_settings().notify_url
    valid, _ = validate_rows(MARKET, enumerate(_rows(n, seed)), notify_url=notify_url)
    return [payout.fields for _, payout in valid]


def _publish(app: Any, task: str, queue: str, payloads: list[dict[str, str]]) -> None:
    with app.producer_or_acquire() as producer:
        for fields in payloads:
            app.send_task(task, args=(fields, uuid.uuid4().hex), queue=queue, producer=producer)


def naive_celery(limit: int, in_flight: int, payouts: int) -> Row:
    from bench.naive_celery import QUEUE, TASK
    from bench.ratelimit import baseline_workers

    row = Row(f"naive Celery task per payout, {in_flight} threads", "baseline", limit, in_flight)
    say(f"slow_provider: {row.label}: {payouts:,} payouts at rate_limit {limit}/s")
    extra = ["--pool=threads", f"--concurrency={in_flight}"]
    env = {"BENCH_RATE_LIMIT": f"{limit}/s", "BENCH_POOL_SIZE": str(in_flight)}
    with cluster(workers=0, sandbox=slow_sandbox(webhooks=False)) as local:
        assert local.sandbox is not None
        payloads = _payloads(payouts + WARM, seed=232)
        with baseline_workers(
            local, 1, app="bench.naive_celery", queue=QUEUE, extra=extra, env=env
        ) as (app, pids):
            _publish(app, TASK, QUEUE, payloads[:WARM])
            if not _wait_paid(local, WARM, time.monotonic() + 120):
                raise TimeoutError("naive Celery: the warm-up did not reach the provider")
            time.sleep(1.0)
            local.sandbox.reset()
            cpu_before = cpu_seconds(pids)
            started, wall = time.monotonic(), time.time()
            _publish(app, TASK, QUEUE, payloads[WARM:])
            done = _wait_paid(local, payouts, started + cap_for(payouts, limit))
            row.seconds = time.monotonic() - started
            stats = local.sandbox.stats()
            row.paid, row.busiest = stats["payouts"], stats["max_payout_requests_per_second"]
            row.capped = not done
            row.cpu = cpu_spent(cpu_before, cpu_seconds(pids))
            row.rss = process_tree_rss(pids)
            row.extra = timeline(local, wall, payouts)
            if not done:
                app.control.purge()
    return row


# --- the raw loop -----------------------------------------------------------------------


def raw_loop(limit: int, in_flight: int, payouts: int) -> Row:
    from worker.core.config import get_settings

    row = Row(f"raw loop, same client, {in_flight} threads", "raw", limit, in_flight)
    say(f"slow_provider: {row.label}: {payouts:,} payouts paced at {limit}/s")
    with cluster(workers=0, sandbox=slow_sandbox(webhooks=False)) as local:
        assert local.sandbox is not None
        settings = get_settings()
        account = settings.account(MARKET)
        mp = multiprocessing.get_context("spawn")
        ready, start, out = mp.Event(), mp.Event(), mp.Queue()
        cap = cap_for(payouts, limit)
        args = (account.base_url, account.merchant_no, account.app_secret,
                _payloads(payouts, seed=233), in_flight, limit, cap, ready, start, out)  # fmt: skip
        child = mp.Process(target=paced_loop.run, args=args)
        child.start()
        try:
            if not ready.wait(60):
                raise TimeoutError("raw loop: the process did not start")
            local.sandbox.reset()
            wall = time.time()
            start.set()
            report = out.get(timeout=cap + 120)
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
        stats = local.sandbox.stats()
        row.extra = {"failures": report["failures"], **timeline(local, wall, payouts)}
    row.seconds, row.cpu, row.rss = report["seconds"], report["cpu"], report["rss"]
    row.paid, row.busiest = stats["payouts"], stats["max_payout_requests_per_second"]
    row.capped = report["sent"] < payouts
    return row


# --- the case ----------------------------------------------------------------------------


def _option(values: Sequence[int] | None, default: Sequence[int]) -> tuple[int, ...]:
    return tuple(values) if values else tuple(default)


def measure(ctx: Context) -> list[Row]:
    payouts = ctx.payouts or ctx.size(DEFAULT_PAYOUTS, 500)
    processes = _option(ctx.processes, DEFAULT_PROCESSES)
    concurrencies: tuple[int | None, ...] = _option(ctx.concurrency, ()) or (None,)
    rows = [
        ours(
            f"ours, Procfile defaults ({PROCFILE_WORKERS} workers)",
            role="ours",
            limit=LIMIT,
            workers=PROCFILE_WORKERS,
            payouts=payouts,
            submit_concurrency=None,
        )
    ]
    high = []
    for count in processes:
        for concurrency in concurrencies:
            shown = "default" if concurrency is None else str(concurrency)
            high.append(
                ours(
                    f"ours, {count} worker process{'es' if count > 1 else ''}, "
                    f"SUBMIT_CONCURRENCY {shown}",
                    role="ours",
                    limit=HIGH_LIMIT,
                    workers=count,
                    payouts=payouts,
                    submit_concurrency=concurrency,
                )
            )
    rows += high
    procfile = rows[0]
    rows.append(
        ours(
            "today's prefork submission (SUBMIT_CONCURRENCY=1)",
            role="baseline",
            limit=LIMIT,
            workers=PROCFILE_WORKERS,
            payouts=payouts,
            submit_concurrency=1,
        )
    )
    rows.append(naive_celery(LIMIT, procfile.in_flight, payouts))
    rows.append(raw_loop(LIMIT, procfile.in_flight, payouts))
    best = max(high, key=lambda row: row.rate)
    rows.append(raw_loop(HIGH_LIMIT, best.in_flight, payouts))
    return rows


def targets(rows: Sequence[Row]) -> dict[int, tuple[str, bool | None]]:
    """Each row's target and whether it met it, by index."""
    raw = {row.limit: row for row in rows if row.role == "raw"}
    out: dict[int, tuple[str, bool | None]] = {}
    for index, row in enumerate(rows):
        if row.role != "ours":
            out[index] = ("-", None)
            continue
        share = TARGET_PROCFILE if row.limit == LIMIT else TARGET_HIGH
        of_raw = row.rate / raw[row.limit].rate if row.limit in raw else 0.0
        met = row.ratio >= share and row.busiest <= row.limit and of_raw >= TARGET_OF_RAW
        out[index] = (f">= {share:g} of limit, >= {TARGET_OF_RAW:g} of raw ({of_raw:.2f})", met)
    return out


COLUMNS = ("configuration", "limit", "in flight", "payouts/s", "of limit", "busiest second",
           "RSS MB", "CPU ms/payout", "wall s", "steady/s", "target", "pass/miss")  # fmt: skip


def _cells(row: Row, target: tuple[str, bool | None]) -> tuple[str, ...]:
    text, met = target
    verdict = "-" if met is None else ("pass" if met else "MISS")
    per_payout = row.cpu / row.paid * 1000 if row.paid else 0.0
    capped = f" (capped, {row.paid:,} paid)" if row.capped else ""
    steady = row.extra.get("steady_per_s")
    return (row.label, f"{row.limit}/s", str(row.in_flight), f"{row.rate:.1f}",
            f"{row.ratio:.2f}", str(row.busiest), f"{row.rss / 2**20:.0f}",
            f"{per_payout:.1f}", f"{row.seconds:.1f}{capped}",
            "-" if steady is None else f"{steady:.1f}", text, verdict)  # fmt: skip


def render(results: Sequence[Result]) -> str:
    """The case's own table (``bench.__main__`` prints it instead of the common one)."""
    rows = [Row(**{k: v for k, v in r.raw["row"].items()}) for r in results if "row" in r.raw]
    found = targets(rows)
    lines = [COLUMNS, *(_cells(row, found[i]) for i, row in enumerate(rows))]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
            for line in lines]  # fmt: skip
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [note for result in results for note in result.notes]
    return "\n".join([*text, "", *notes])


def run(ctx: Context) -> list[Result]:
    rows = measure(ctx)
    found = targets(rows)
    note = (
        f"slow_provider: sandbox latency median {MEDIAN:g} s, sigma {SIGMA:g} (lognormal, "
        f"at most 10 medians), webhooks settling payouts 1-3 s after acceptance; ours runs "
        f"the Procfile's lines (web, beat, workers of --concurrency={procfile_concurrency()}); "
        f"payouts/s = accepted by the sandbox / time from the enqueue (first request) to "
        f"the last answer or the row's cap; steady/s = the pace between the 5th and 95th "
        f"percentile of the payouts accepted (no start, no tail); busiest second = the "
        f"sandbox's busiest sliding 1 s of received POSTs; RSS and CPU over the processes "
        f"that POST; {os.cpu_count()} cores shared with the sandbox (this process)."
    )
    results = []
    for index, row in enumerate(rows):
        target, met = found[index]
        results.append(
            Result(
                case=f"slow provider: {row.label}, {row.limit}/s",
                ours=f"{row.rate:.1f}/s, max {row.busiest} in 1 s",
                ratio=f"{row.ratio:.2f} of limit",
                target=target,
                passed=met,
                notes=[note] if index == 0 else [],
                raw={"row": row.__dict__ | {"extra": dict(row.extra)}},
            )
        )
    return results
