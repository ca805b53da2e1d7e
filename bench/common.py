"""Shared helpers for the benchmarks: results, the table, private clusters, timing, RSS.

A case module exposes ``NAME: str`` and ``run(ctx: Context) -> list[Result]``; each
starts whatever it needs (a private Redis and PostgreSQL, or a whole ``LocalCluster``
on a private PostgreSQL) and stops it before returning, so cases never share state.
Progress goes to stderr; the table of every case's results is printed once, at the
end, by ``bench.__main__``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from worker.dev.cluster import LocalCluster
    from worker.dev.postgres_server import PostgresServer
    from worker.dev.redis_server import RedisServer
    from worker.ledger import Ledger
    from worker.sandbox import SandboxConfig

N = TypeVar("N", int, float)

# A provider limit no run can reach: "no rate limit" for the throughput cases.
NO_LIMIT = "100000/s"
MARKET = "ID"
# Every payout needs a notify URL and NOTIFY_URL has no default (nothing is delivered here).
NOTIFY_URL = "https://disburse.example/notify"


@dataclass
class Context:
    """What every case is told: the size of the run and which cases run with it."""

    quick: bool = False
    selected: tuple[str, ...] = ()
    payouts: int | None = None  # the soak's and slow_provider's size (``--payouts``)
    processes: tuple[int, ...] | None = None  # slow_provider's worker process counts to try
    concurrency: tuple[int, ...] | None = None  # and its SUBMIT_CONCURRENCY values

    def size(self, full: N, quick: N) -> N:
        return quick if self.quick else full


@dataclass
class Result:
    """One row of the table. ``passed`` is None for a row measured for information only."""

    case: str
    ours: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "-"
        return "pass" if self.passed else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "ours": self.ours,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "verdict": self.verdict,
            "notes": self.notes,
            "raw": self.raw,
        }


COLUMNS = ("case", "ours", "baseline", "ratio", "target", "pass/miss")


def table(results: Sequence[Result]) -> str:
    """One Markdown table (readable as plain text too), then the numbered notes."""
    rows = [COLUMNS]
    notes: list[str] = []
    for result in results:
        marks = ""
        for note in result.notes:
            notes.append(note)
            marks += f" [{len(notes)}]"
        rows.append(
            (
                result.case + marks,
                result.ours,
                result.baseline,
                result.ratio,
                result.target,
                result.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if notes:
        lines.append("")
        lines += [f"[{number}] {note}" for number, note in enumerate(notes, start=1)]
    return "\n".join(lines)


# --- output -----------------------------------------------------------------------------

_STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress, on stderr (the table alone goes to stdout)."""
    elapsed = time.monotonic() - _STARTED
    print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def rate(value: float) -> str:
    return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def times(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def megabytes(value: float) -> str:
    return f"{value / 2**20:+.1f} MB"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with ``pct`` % of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def busiest_window(stamps: Sequence[float], window: float = 1.0) -> int:
    """The most stamps in any half-open ``window`` (a sliding window over sorted stamps)."""
    ordered = sorted(stamps)
    best = start = 0
    for end, stamp in enumerate(ordered):
        while ordered[start] <= stamp - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition"
) -> float:
    """Poll ``check`` until true; returns the monotonic time it was seen true."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --- the system under test ------------------------------------------------------------


def quiet_sandbox(**knobs: Any) -> SandboxConfig:
    """A provider that answers at once and does nothing in the background during a run.

    No latency, no failures, no webhooks, and settlement far beyond any run, so the
    sandbox (a thread pool inside this process) spends its CPU on answering POSTs only.
    """
    from worker.sandbox import SandboxConfig

    defaults: dict[str, Any] = {
        "latency": 0.0,
        "failure_ratio": 0.0,
        "webhooks": False,
        "settle_delay": (3600.0, 3600.0),
        "seed": 5,
    }
    return SandboxConfig(**{**defaults, **knobs})


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    from worker.celery import runtime

    saved = dict(os.environ)
    try:
        os.environ.update(values)
        runtime.reset()
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        runtime.reset()


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL of our own, durable (fsync on, as payouts need), migrated."""
    from worker.db import migrate
    from worker.dev.postgres_server import PostgresServer

    with PostgresServer(durable=True) as server:
        migrate.upgrade(server.url)
        yield server


@contextlib.contextmanager
def private_servers() -> Iterator[RedisServer]:
    """A fresh Redis and PostgreSQL of our own, with this process's settings pointed at
    them; yields the Redis (see :func:`empty_servers`)."""
    from worker.dev.redis_server import RedisServer

    with private_postgres() as database:
        server = RedisServer().start()
        try:
            urls = {"REDIS_URL": server.url, "DATABASE_URL": database.url, "NOTIFY_URL": NOTIFY_URL}
            with _environment(urls):
                yield server
        finally:
            server.close()


def empty_servers() -> None:
    """Every key of the private Redis and every row of the ledger gone, as if fresh."""
    from worker.celery import runtime

    runtime.redis_client().flushall()
    with runtime.pool().connection() as conn:
        conn.execute("TRUNCATE order_events, orders, batch_totals, batches CASCADE")


@contextlib.contextmanager
def cluster(
    *,
    workers: int,
    concurrency: int = 1,
    rate_limit: str = NO_LIMIT,
    sandbox: SandboxConfig | None = None,
    beat: bool = False,
    web: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[LocalCluster]:
    """A LocalCluster of ``workers`` celery worker processes (``concurrency`` each).

    Beat and the webhook receiver are off by default: a benchmark measures submission
    and must not share the workers with reconcile sweeps it did not ask for.
    """
    from worker.dev.cluster import LocalCluster

    with private_postgres() as database:
        settings = {
            "VEXORA_RATE_LIMIT": rate_limit,
            "DATABASE_URL": database.url,
            **(env or {}),
        }
        local = LocalCluster(
            workers=workers,
            concurrency=concurrency,
            beat=beat,
            web=web,
            sandbox=sandbox or quiet_sandbox(),
            env=settings,
        )
        try:
            local.start()
            with _environment(local.env()):
                local.wait_ready(timeout=60)
                yield local
        except BaseException:
            say(f"cluster failed; logs in {local.log_dir}")
            for log in sorted(local.log_dir.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print(f"--- {log.name} (tail)\n" + "\n".join(tail), file=sys.stderr)
            raise
        finally:
            local.close()


# Faster than any run drains its open orders, in orders/s (see wait_handed_over).
POLL_DRAIN = 5_000


def open_states(ledger: Ledger) -> int:
    """Orders not yet handed to the provider (QUEUED or SUBMITTING): two reads of the
    ledger's index of open orders, cheap enough to poll while workers run."""
    from worker.core.states import State

    return ledger.count(State.QUEUED) + ledger.count(State.SUBMITTING)


def handed_over(ledger: Ledger) -> int:
    """Orders the provider has answered for (PROCESSING, UNKNOWN, REVIEW or final): a
    count of the whole table, not to poll."""
    from worker.core.states import State

    counts = ledger.state_counts()
    return sum(n for state, n in counts.items() if state not in (State.QUEUED, State.SUBMITTING))


def wait_handed_over(ledger: Ledger, total: int, timeout: float, interval: float = 0.02) -> float:
    """Until ``total`` orders have left QUEUED/SUBMITTING; the monotonic time seen.

    Polls the open orders only (an enqueue commits every order before it returns), and
    counts the whole table once they are none. Each count walks the index entries of
    the orders that already left (dead until a vacuum), ~8 ms of the server's CPU
    midway through 20,000: every ``interval``, that took 5-10% of a core from the
    workers being measured. So the poll sleeps ``left / POLL_DRAIN`` seconds (at most
    a second) while ``left`` orders are open: under POLL_DRAIN orders/s they cannot
    all leave in that time, and the end is still seen within ``interval``.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = open_states(ledger)
        if left == 0 and handed_over(ledger) >= total:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:g}s waiting for {total} orders to reach the provider"
            )
        time.sleep(max(interval, min(1.0, left / POLL_DRAIN)))


def process_tree_rss(pids: Sequence[int]) -> int:
    """Resident bytes of these processes and all their children (each counted once)."""
    import psutil

    seen: dict[int, int] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    seen[process.pid] = process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return sum(seen.values())


def worker_pids(local: LocalCluster) -> list[int]:
    return [process.pid for process in local.workers if process is not None]


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])
