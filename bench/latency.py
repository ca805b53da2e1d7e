"""Case 4: latency on an idle system, one payout at a time.

From just before ``worker.enqueue`` (validate, persist, publish one order) to the
moment the sandbox provider accepted its POST (the sandbox's ``received_at`` for
that tradeNo; same machine, same clock), over sequential payouts with 2 idle worker
processes. The next payout is enqueued only after the previous one arrived, plus a
short pause, so every one meets an idle system. No baseline: the target is absolute.
"""

from __future__ import annotations

import statistics
import time

from bench.common import MARKET, Context, Result, cluster, ms, percentile, say

NAME = "latency"
TARGET_P50 = 0.020
TARGET_P99 = 0.100
WARMUP = 10
GAP = 0.05  # seconds of idleness between two payouts


def _one(sandbox_state: object, row: dict[str, str], timeout: float = 10.0) -> tuple[float, float]:
    """(enqueue call seconds, enqueue-to-accepted seconds) for one payout."""
    import worker

    started = time.time()
    order = worker.enqueue(MARKET, row)
    returned = time.time()
    deadline = time.monotonic() + timeout
    get = sandbox_state.get  # type: ignore[attr-defined]
    while (payout := get(order.trade_no)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"payout {order.trade_no} never reached the sandbox")
        time.sleep(0.0005)
    return returned - started, payout.received_at - started


def run(ctx: Context) -> list[Result]:
    from worker.core.samples import sample_rows

    n = ctx.size(200, 40)
    rows = sample_rows(MARKET, WARMUP + n, seed=41)
    with cluster(workers=2) as local:
        state = local.sandbox.state
        say(f"latency: {WARMUP} warm-up payouts, then {n} measured, one at a time")
        for row in rows[:WARMUP]:
            _one(state, row)
            time.sleep(GAP)
        enqueue_times: list[float] = []
        latencies: list[float] = []
        for row in rows[WARMUP:]:
            call, latency = _one(state, row)
            enqueue_times.append(call)
            latencies.append(latency)
            time.sleep(GAP)
    p50 = percentile(latencies, 50)
    p99 = percentile(latencies, 99)
    raw = {
        "payouts": n,
        "p50_s": p50,
        "p99_s": p99,
        "max_s": max(latencies),
        "mean_s": statistics.fmean(latencies),
        "enqueue_call_p50_s": percentile(enqueue_times, 50),
        "enqueue_call_p99_s": percentile(enqueue_times, 99),
    }
    note = (
        f"latency: {n} sequential payouts after {WARMUP} warm-up ones, 2 worker processes "
        f"(concurrency 1), no beat, no webhooks, rate limit out of the way; the enqueue call "
        f"itself: p50 {ms(raw['enqueue_call_p50_s'])}, p99 {ms(raw['enqueue_call_p99_s'])}; "
        f"max {ms(raw['max_s'])}."
    )
    return [
        Result(
            case="latency enqueue -> provider accepted, p50",
            ours=ms(p50),
            target=f"< {TARGET_P50 * 1000:g} ms",
            passed=p50 < TARGET_P50,
            notes=[note],
            raw=raw,
        ),
        Result(
            case="latency enqueue -> provider accepted, p99",
            ours=ms(p99),
            target=f"< {TARGET_P99 * 1000:g} ms",
            passed=p99 < TARGET_P99,
        ),
    ]
