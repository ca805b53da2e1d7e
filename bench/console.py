"""How fast the console's pages answer with 100,000 payouts in one batch (target: under
200 ms each, issue 26), on a private PostgreSQL and Redis, through the WSGI app in this
process (no network between: the time is the app's and the database's). The baseline
reads the batch's orders one page at a time, as a page listing every payout would.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

from bench.common import MARKET, Context, Result, private_servers, say, seconds, times

NAME = "console"
TARGET = 0.2
PASSWORD = "bench password 1"


def _median_get(client: Any, path: str, runs: int) -> float:
    client.get(path)  # warm
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path)
        took.append(time.perf_counter() - started)
        assert answer.status_code == 200, (path, answer.status_code)
    return statistics.median(took)


def run(ctx: Context) -> list[Result]:
    from worker.celery import runtime
    from worker.console.app import create_app
    from worker.core.samples import sample_rows
    from worker.dev.credentials import sandbox_env

    payouts, runs = ctx.size(100_000, 5_000), ctx.size(15, 5)
    with private_servers():
        os.environ.update(sandbox_env())
        runtime.reset()
        say(f"console: enqueueing {payouts} payouts in one batch (held)")
        rows = sample_rows(MARKET, payouts)
        result = runtime.producer().enqueue_batch(
            MARKET, list(enumerate(rows, start=1)), hold=True, operator="bench"
        )
        batch_id, reference = result.batch_id, rows[payouts // 2]["reference"]
        runtime.accounts().add("bench", "admin", PASSWORD, by="bench")
        app = create_app()
        app.config["WTF_CSRF_ENABLED"] = False  # a client without a browser's form
        client = app.test_client()
        client.post("/signin", data={"name": "bench", "password": PASSWORD})
        pages = {
            "batches": "/batches",
            "a batch": f"/batches/{batch_id}",
            "its live progress": f"/batches/{batch_id}/progress",
            "a payout": f"/payout?q={reference}",
            "review queue": "/review",
            "audit trail": "/audit",
        }
        measured = {}
        for name, path in pages.items():
            say(f"console: GET {path}, {runs} runs")
            measured[name] = _median_get(client, path, runs)
        say("console: baseline, every order of the batch read")
        started = time.perf_counter()
        ledger = runtime.ledger()
        for page in ledger.iter_batch(str(batch_id)):
            ledger.get_many(page)
        baseline = time.perf_counter() - started
        runtime.reset()
    results = []
    for name, took in measured.items():
        results.append(
            Result(
                case=f"console: {name} ({payouts} payouts in the batch)",
                ours=seconds(took),
                baseline=seconds(baseline) if name == "a batch" else "-",
                ratio=times(baseline / took) + " faster" if name == "a batch" else "-",
                target=f"< {TARGET:g} s",
                passed=took < TARGET,
                raw={"median_s": took, "runs": runs, "payouts": payouts},
            )
        )
    results[0].notes.append(
        "console: median of GETs through the WSGI app in process; a batch's page counts by "
        "state in SQL (GROUP BY over the batch's index); the baseline reads every order."
    )
    return results


def main() -> int:
    from bench.common import table

    print(table(run(Context(quick="--quick" in sys.argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
