"""The PostgreSQL ledger (worker/ledger.py): ``python -m bench.pg_ledger [options]``.

On a private server (durable unless ``--not-durable``: fsync on, as payouts need):

1. create: ``create_orders`` of N validated sample payouts (the four markets in turn)
   in one batch; the Python part alone (tradeNos, JSON of the fields and of their
   masked copy) is timed too, and a baseline of one ``create_orders([payout])`` per
   order. Validation is timed for reference (the accept path is validate + create +
   publish).
2. claim+apply: the submit path's ledger work per payout, as worker.flows.submit does it at
   full speed (``claim_many`` of a group with the answers to the group before,
   PROCESSING), from 1 and 2 threads (each with its own pooled
   connection), then every order settled by a webhook's report (SUCCEEDED: the payload
   is erased). CPU seconds of the server's processes and of this process are shown
   beside the clock's: on a shared machine they move much less with its load.
3. bytes per order once every order is settled: every table (with TOAST and maps)
   and index, after VACUUM (the files as they stay) and after VACUUM FULL (what a
   settled order keeps for the years of retention).
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.pg_size import MARKETS, NOTIFY_URL, relation_sizes

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from schemas import Payout
    from worker.ledger import Ledger


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, case: str, value: str, note: str = "") -> None:
        self.rows.append((case, value, note))
        print(f"  {case}: {value}  {note}", flush=True)

    def table(self) -> str:
        rows = [("case", "result", "notes"), *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        ]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)


def sample_payouts(n: int) -> tuple[list[Payout], float]:
    """``n`` valid payouts, the four markets in turn, and the seconds validation took."""
    from schemas import validate_rows
    from worker.core.samples import sample_rows

    per_market = -(-n // len(MARKETS))
    payouts: list[Payout] = []
    spent = 0.0
    for market in MARKETS:
        rows = list(enumerate(sample_rows(market, per_market, seed=11), start=1))
        started = time.perf_counter()
        valid, errors = validate_rows(market, rows, notify_url=NOTIFY_URL)
        spent += time.perf_counter() - started
        assert not errors, errors[:3]
        payouts += [payout for _, payout in valid]
    return payouts[:n], spent


def python_part(payouts: Sequence[Payout]) -> float:
    """Seconds for what ``create_orders`` computes per row before the COPY sends it."""
    import orjson

    from worker.core.redact import mask_personal
    from worker.ledger import new_trade_no

    started = time.perf_counter()
    for payout in payouts:
        new_trade_no()
        orjson.dumps(payout.fields).decode()
        orjson.dumps(mask_personal(payout.fields)).decode()
    return time.perf_counter() - started


def in_threads(work: Callable[[Sequence[str]], None], trade_nos: list[str], threads: int) -> float:
    """Seconds for ``threads`` threads to run ``work`` over equal shares of ``trade_nos``."""
    shares = [trade_nos[i::threads] for i in range(threads)]
    start = threading.Barrier(threads + 1)

    def run(share: Sequence[str]) -> None:
        start.wait()
        work(share)

    workers = [threading.Thread(target=run, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    start.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def submit_path(ledger: Ledger) -> Callable[[Sequence[str]], None]:
    """The submit task's ledger work (worker.flows.submit) at full speed: groups of GROUP orders
    claimed in one statement with the provider's answers to the group before, the last
    answers alone."""
    from worker.core.states import State
    from worker.flows.submit import GROUP
    from worker.provider.report import ProviderReport

    def work(trade_nos: Sequence[str]) -> None:
        answers: list[tuple[str, ProviderReport]] = []
        for start in range(0, len(trade_nos), GROUP):
            group = trade_nos[start : start + GROUP]
            claims = ledger.claim_many(group, answers=answers)
            assert all(claimed.moved and payload is not None for claimed, payload in claims)
            answers = [
                (trade_no, ProviderReport(State.PROCESSING, f"P{trade_no[-8:]}", "0015", "OK"))
                for trade_no in group
            ]
        if answers:
            ledger.claim_many([], answers=answers)

    return work


def server_cpu(pool: ConnectionPool) -> float:
    """CPU seconds used so far by the server's processes (every one pg_stat_activity
    lists: sessions, WAL writer, checkpointer...): a cost the machine's load hardly moves,
    unlike the seconds on the clock."""
    import psutil

    with pool.connection() as conn:
        pids = [pid for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity")]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def settle(ledger: Ledger) -> Callable[[Sequence[str]], None]:
    from worker.core.states import Outcome, State
    from worker.provider.report import ProviderReport

    def work(trade_nos: Sequence[str]) -> None:
        for trade_no in trade_nos:
            report = ProviderReport(State.SUCCEEDED, None, "0000", "Success")
            assert ledger.apply_report(trade_no, report, source="webhook") is Outcome.MOVED

    return work


def run(n: int, per_thread: int, baseline: int, durable: bool) -> Report:
    import psycopg

    from worker.core.states import State
    from worker.db.migrate import upgrade
    from worker.db.pool import open_pool
    from worker.dev.postgres_server import PostgresServer
    from worker.ledger import Ledger, new_batch_id

    report = Report()
    assert 3 * per_thread <= n, "claim+apply takes its orders from the bulk batch"
    payouts, validating = sample_payouts(n + baseline)
    report.add(
        "validate (for reference)",
        f"{validating:.2f} s",
        f"{len(payouts):,} rows: {len(payouts) / validating:,.0f}/s",
    )
    prep = python_part(payouts[:n])
    with PostgresServer(durable=durable) as server:
        upgrade(server.url)
        with open_pool(server.url, max_size=3) as pool:
            ledger = Ledger(pool)
            cpu = server_cpu(pool), time.process_time()
            started = time.perf_counter()
            created = ledger.create_orders(payouts[:n], batch_id=new_batch_id(), market="ID")
            bulk = time.perf_counter() - started
            spent, here = server_cpu(pool) - cpu[0], time.process_time() - cpu[1]
            assert len(created) == n and all(is_new for _, is_new in created)
            report.add(
                f"create_orders, {n:,} rows in one batch",
                f"{bulk:.2f} s = {n / bulk:,.0f}/s",
                f"of which Python (tradeNos, JSON, masking) {prep:.2f} s; "
                f"CPU: server {spent:.2f} s, this process {here:.2f} s",
            )
            started = time.perf_counter()
            for payout in payouts[n : n + baseline]:
                ledger.create_orders([payout], batch_id=new_batch_id(), market="ID")
            one = (time.perf_counter() - started) / baseline
            report.add(
                "baseline: one create_orders call per row",
                f"{1 / one:,.0f}/s",
                f"{baseline:,} rows; bulk is {one * n / bulk:.1f}x faster",
            )
            with pool.connection() as conn:
                conn.autocommit = True
                conn.execute("VACUUM ANALYZE")
            queued = [trade_no for trade_no, _ in created]
            done: list[str] = []
            for threads in (1, 2):
                chunk, queued = queued[: threads * per_thread], queued[threads * per_thread :]
                cpu = server_cpu(pool), time.process_time()
                seconds = in_threads(submit_path(ledger), chunk, threads)
                spent, here = server_cpu(pool) - cpu[0], time.process_time() - cpu[1]
                report.add(
                    f"claim_many + answers (PROCESSING), {threads} thread(s)",
                    f"{len(chunk) / seconds:,.0f} payouts/s",
                    f"{len(chunk):,} payouts, {seconds / len(chunk) * 1000:.2f} ms each; CPU "
                    f"per payout: server {spent / len(chunk) * 1000:.2f} ms, "
                    f"this process {here / len(chunk) * 1000:.2f} ms",
                )
                done += chunk
            seconds = in_threads(settle(ledger), done, 2)
            report.add(
                "apply_report(SUCCEEDED) from webhooks, 2 threads",
                f"{len(done) / seconds:,.0f}/s",
                "the payload erased in the same update",
            )
            # Only settled orders remain for the size: the rest are cancelled (payload erased).
            rest = [t for t, _ in ledger.scan(State.QUEUED, older_than=0, now_ms=ledger.now_ms())]
            for start in range(0, len(rest), 1000):
                ledger.transition_many(
                    rest[start : start + 1000], State.CANCELLED, source="operator"
                )
        with psycopg.connect(server.url, autocommit=True) as conn:
            (orders,) = conn.execute("SELECT count(*) FROM orders").fetchone() or (0,)
            conn.execute("VACUUM ANALYZE")
            kept = sum(relation_sizes(conn).values()) / orders
            conn.execute("VACUUM FULL ANALYZE")
            compact = relation_sizes(conn)
        report.add(
            f"bytes per settled order ({orders:,})",
            f"{sum(compact.values()) / orders:,.0f} B after VACUUM FULL",
            f"{kept:,.0f} B after VACUUM; "
            + ", ".join(
                f"{name} {size / orders:,.0f}"
                for name, size in sorted(compact.items(), key=lambda kv: -kv[1])[:4]
            ),
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_ledger", description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000, help="created in one batch")
    parser.add_argument("--per-thread", type=int, default=5_000, help="claim+apply per thread")
    parser.add_argument("--baseline", type=int, default=2_000, help="created one call each")
    parser.add_argument("--not-durable", action="store_true", help="fsync off (faster, unsafe)")
    args = parser.parse_args(argv)
    report = run(args.orders, args.per_thread, args.baseline, durable=not args.not_durable)
    print()
    print(report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
