"""Many PROCESSING orders, fast: for the reconcile benchmarks and tests.

Each order is made the honest way, only faster than the submit rate limit lets the
workers: persisted through the ledger, claimed, POSTed to the provider (the sandbox)
with its tradeNo, and the answer applied as a submit task would. Whatever then
brings them to a final state (webhooks, or with them off reconciliation alone) is
what a benchmark or test measures.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from schemas import validate_rows
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.ledger import new_batch_id


def make_pending(
    count: int, *, market: str = "ID", seed: int = 42, start: int = 0, threads: int = 8
) -> tuple[str, list[str]]:
    """``count`` orders the provider accepted, PROCESSING in a batch of their own:
    (batch id, tradeNos in row order). Uses the process's runtime (its environment)."""
    settings = runtime.get_settings()
    ledger = runtime.ledger()
    rows = enumerate(sample_rows(market, count, seed=seed, start=start))
    valid, errors = validate_rows(market, rows, notify_url=settings.notify_url)
    if errors:
        raise ValueError(f"sample rows invalid: {errors[0]}")
    batch_id = new_batch_id()
    created = ledger.create_orders([p for _, p in valid], batch_id=batch_id, market=market)
    trade_nos = [trade_no for trade_no, _ in created]
    client = runtime.vexora(market)

    def send(trade_no: str) -> None:
        claimed, fields = ledger.claim(trade_no)
        assert claimed.moved and fields is not None, claimed
        result = client.submit(fields, trade_no)
        ledger.apply_report(trade_no, result.report, source="submit")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, trade_nos))
    return batch_id, trade_nos
