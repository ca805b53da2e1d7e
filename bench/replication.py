"""What synchronous replication buys and costs (README, "Production"): a PostgreSQL
primary and its streaming standby on this machine (worker.dev.replicated), replicated
synchronously and asynchronously.

* commit: one-row INSERTs committed one at a time on the primary, as the ledger's
  claims and answers are: the cost of waiting for the standby on every commit.
* loss: writers commit numbered rows as fast as they can; the primary is SIGKILLed
  mid-stream and the standby promoted; the rows whose commit had returned but that the
  promoted standby lacks were lost. Synchronous: none, by construction.

Both servers run with fsync off (test servers), on loopback: the numbers are the
replication protocol's floor; across machines add a network round trip per commit.

``.venv/bin/python -m bench.replication`` (or ``--quick``).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import psycopg

from bench.common import Context, Result, say, table
from worker.dev.replicated import ReplicatedPostgres

WRITERS = 4


def run(ctx: Context) -> list[Result]:
    commits, rounds = ctx.size(2000, 200), ctx.size(5, 2)
    results = []
    for synchronous in (True, False):
        mode = "synchronous" if synchronous else "asynchronous"
        say(f"replication: {mode}")
        latency = _commit_latency(synchronous, commits)
        lost, acknowledged = 0, 0
        for _ in range(rounds):
            round_lost, round_acknowledged = _loss_at_failover(synchronous)
            lost += round_lost
            acknowledged += round_acknowledged
        results.append(
            Result(
                f"replication {mode}",
                f"commit {statistics.mean(latency) * 1000:.2f} ms mean, "
                f"p99 {statistics.quantiles(latency, n=100)[98] * 1000:.2f} ms; "
                f"{lost} of {acknowledged} committed rows lost in {rounds} failovers",
                raw={"commit_seconds": latency, "lost": lost, "acknowledged": acknowledged},
            )
        )
    return results


def _commit_latency(synchronous: bool, commits: int) -> list[float]:
    with (
        ReplicatedPostgres(synchronous=synchronous) as servers,
        psycopg.connect(servers.primary.url, autocommit=True) as conn,
    ):
        conn.execute("CREATE TABLE t (n bigint)")
        took = []
        for n in range(commits):
            started = time.perf_counter()
            conn.execute("INSERT INTO t VALUES (%s)", (n,))
            took.append(time.perf_counter() - started)
    return took


def _loss_at_failover(synchronous: bool) -> tuple[int, int]:
    """(rows committed but missing after the failover, rows committed)."""
    with ReplicatedPostgres(synchronous=synchronous) as servers:
        with psycopg.connect(servers.primary.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (writer int, n bigint)")
        acknowledged: list[list[int]] = [[] for _ in range(WRITERS)]
        threads = [
            threading.Thread(target=_write, args=(servers.primary.url, w, acknowledged[w]))
            for w in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        servers.fail_over()
        for thread in threads:
            thread.join()
        with psycopg.connect(servers.primary.url) as conn:
            kept = set(conn.execute("SELECT writer, n FROM t").fetchall())
    committed = {(w, n) for w, rows in enumerate(acknowledged) for n in rows}
    return len(committed - kept), len(committed)


def _write(url: str, writer: int, acknowledged: list[int]) -> None:
    """Commit rows until the server is gone, noting each whose commit returned."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for n in range(10**9):
                conn.execute("INSERT INTO t VALUES (%s, %s)", (writer, n))
                acknowledged.append(n)
    except psycopg.OperationalError:
        return


if __name__ == "__main__":
    print(table(run(Context(quick="--quick" in sys.argv[1:]))))
