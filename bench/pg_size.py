"""PostgreSQL bytes per order: ``python -m bench.pg_size [--orders N]``.

On a private server with the ledger schema, N sample payouts (the four markets in
turn, validated as the CLI does) are written with COPY in PROCESSING, each with its
payload, a masked copy (long digit runs masked as ``redact`` does), provider ids and
two events (creation, the provider's acceptance). The size of every table (with its
TOAST, free-space and visibility maps) and of every index is divided by N. Then
every order settles as it would for good (SUCCEEDED, payload erased, a third event)
and, after VACUUM FULL, the bytes a settled order keeps for the years of retention
are measured the same way.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import Context, Result, say

NAME = "pg_size"
TARGET_BYTES = 2048
MARKETS = ("ID", "AR", "JP", "KH")
NOTIFY_URL = "https://payouts.example.com/disburse/webhooks/vexora"
TABLES = ("orders", "order_events", "batches", "batch_totals")


@dataclass(frozen=True)
class Sizes:
    orders: int
    seconds: float  # to write them with COPY
    pending: dict[str, int]  # bytes per relation, orders in PROCESSING with their payload
    settled: dict[str, int]  # the same orders settled for good, after VACUUM FULL

    def per_order(self, sizes: dict[str, int]) -> float:
        return sum(sizes.values()) / self.orders


def measure(n: int) -> Sizes:
    from worker.db.migrate import upgrade
    from worker.dev.postgres_server import PostgresServer

    with PostgresServer(durable=False) as server:
        upgrade(server.url)
        with psycopg.connect(server.url, autocommit=True) as conn:
            payouts = list(_payouts(n))[:n]
            say(f"pg_size: writing {n:,} orders and {2 * n:,} events")
            started = time.perf_counter()
            _fill(conn, payouts)
            seconds = time.perf_counter() - started
            conn.execute("VACUUM ANALYZE")
            pending = relation_sizes(conn)
            say("pg_size: settling every order, erasing payloads, VACUUM FULL")
            _settle(conn)
            conn.execute("VACUUM FULL ANALYZE")
            settled = relation_sizes(conn)
    return Sizes(n, seconds, pending, settled)


def run(ctx: Context) -> list[Result]:
    """The bench case: the total against the target, for ``python -m bench``'s table."""
    sizes = measure(ctx.size(10_000, 1_000))
    total = sizes.per_order(sizes.pending)
    return [
        Result(
            case="PostgreSQL bytes/order",
            ours=f"{total:,.0f}",
            target=f"< {TARGET_BYTES:,}",
            passed=total < TARGET_BYTES,
            notes=[
                f"{sizes.orders:,} orders in PROCESSING, payload and 2 events each; "
                f"{sizes.per_order(sizes.settled):,.0f} once settled (payload erased, "
                "3 events, VACUUM FULL)"
            ],
            raw={"orders": sizes.orders, "pending": sizes.pending, "settled": sizes.settled},
        )
    ]


def report(sizes: Sizes) -> str:
    """One row per table and index: bytes per order pending, and settled."""
    n = sizes.orders
    rows = [("relation", "pending", "settled")]
    for name in sorted(sizes.pending, key=lambda name: -sizes.pending[name]):
        rows.append((name, f"{sizes.pending[name] / n:,.0f}", f"{sizes.settled[name] / n:,.0f}"))
    pending, settled = sizes.per_order(sizes.pending), sizes.per_order(sizes.settled)
    rows.append(("total bytes per order", f"{pending:,.0f}", f"{settled:,.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].rjust(widths[2])}"
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    verdict = "met" if pending < TARGET_BYTES else "MISSED"
    lines.append(
        f"\n{n:,} orders written with COPY in {sizes.seconds:.2f} s; target: under "
        f"{TARGET_BYTES:,} bytes per order pending ({verdict})"
    )
    return "\n".join(lines)


def _payouts(n: int) -> Iterator[tuple[int, Any]]:
    from schemas import validate_rows
    from worker.core.samples import sample_rows

    per_market = -(-n // len(MARKETS))
    for market in MARKETS:
        rows = list(enumerate(sample_rows(market, per_market, seed=7), start=1))
        valid, errors = validate_rows(market, rows, notify_url=NOTIFY_URL)
        assert not errors, errors[:3]
        yield from valid


def _masked(fields: dict[str, str]) -> str:
    from worker.core.redact import redact

    return json.dumps({key: redact(value) for key, value in fields.items()}, ensure_ascii=False)


def _fill(conn: psycopg.Connection, payouts: list[tuple[int, Any]]) -> None:
    batches = {payout.market: "b" + uuid.uuid4().hex[:15] for _, payout in payouts}
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY batches (id, market, row_count) FROM STDIN") as copy:
            counts = Counter(payout.market for _, payout in payouts)
            for market, batch_id in batches.items():
                copy.write_row((batch_id, market, counts[market]))
        trade_nos = [uuid.uuid4().hex for _ in payouts]
        # Orders reach PROCESSING one by one: distinct times, as the pending index sees them.
        accepted_at = datetime.now(UTC)
        with cur.copy(
            "COPY orders (trade_no, batch_id, row_no, market, currency, amount, reference, "
            "state, state_entered_at, platform_trade_no, provider_status, provider_message, "
            "payload, masked) FROM STDIN"
        ) as copy:
            for index, (trade_no, (row_no, payout)) in enumerate(
                zip(trade_nos, payouts, strict=True)
            ):
                copy.write_row(
                    (
                        trade_no,
                        batches[payout.market],
                        row_no,
                        payout.market,
                        payout.currency,
                        payout.amount,
                        payout.reference,
                        "PROCESSING",
                        accepted_at + timedelta(milliseconds=index),
                        "P" + uuid.uuid4().hex[:20].upper(),
                        "0015",
                        "Request accepted",
                        json.dumps(payout.fields, ensure_ascii=False),
                        _masked(payout.fields),
                    )
                )
        accepted = json.dumps({"provider_status": "0015", "provider_message": "Request accepted"})
        with cur.copy(
            "COPY order_events (trade_no, source, from_state, to_state, facts) FROM STDIN"
        ) as copy:
            for trade_no in trade_nos:
                copy.write_row((trade_no, "producer", None, "QUEUED", None))
                copy.write_row((trade_no, "submit", "SUBMITTING", "PROCESSING", accepted))


def _settle(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE orders SET state = 'SUCCEEDED', payload = NULL, "
            "updated_at = now(), state_entered_at = now()"
        )
        conn.execute(
            "INSERT INTO order_events (trade_no, source, from_state, to_state, facts) "
            "SELECT trade_no, 'webhook', 'PROCESSING', 'SUCCEEDED', "
            """'{"provider_status": "0000", "provider_message": "Success"}'::jsonb FROM orders"""
        )


def relation_sizes(conn: psycopg.Connection) -> dict[str, int]:
    """Bytes of each ledger table (heap, TOAST, maps) and of each of its indexes."""
    sizes: dict[str, int] = {}
    for name in TABLES:
        (heap,) = conn.execute("SELECT pg_table_size(%s)", (name,)).fetchone() or (0,)
        sizes[f"{name} (table)"] = int(heap)
        rows = conn.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
            "FROM pg_index WHERE indrelid = %s::regclass",
            (name,),
        )
        for index, size in rows:
            sizes[index] = int(size)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_size", description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000, help="how many (default 10,000)")
    args = parser.parse_args(argv)
    print(report(measure(args.orders)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
