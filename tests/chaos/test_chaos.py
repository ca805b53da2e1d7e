"""Chaos: workers SIGKILLed mid-batch, Redis restarted and wiped, PostgreSQL restarted
and crashed, a misbehaving provider.

The promise under test (DESIGN.md): every payout is paid at most once, and every payout
ends SUCCEEDED, FAILED or REVIEW, with the provider's own final state (or CANCELLED,
only if the provider never received it).

A real PostgreSQL (the ledger), a real Redis server with AOF on (it only coordinates),
the sandbox over HTTP with its faults on (5xx, accept-then-hang, dropped and duplicated
webhooks, a short-lived OAuth token), three real ``celery worker`` processes plus
``celery beat`` from the Procfile, with the settings a user gets. 2,000 payouts across
the four markets; while they are worked through, one worker is SIGKILLed every one to
two seconds and started again; Redis is wiped once (FLUSHALL: queues, leases, markers,
limiter state and token gone) and down for five seconds once; PostgreSQL is down for
three seconds twice, after a fast shutdown and after a crash (SIGKILL: recovery from its
WAL). Meanwhile, as an attacker and an operator would (issue 21): notifications forged
with the sandbox's public secret and with the other provider account's secret are posted
all along (AR is an account of its own); one batch is cancelled while it is being sent;
and an incident drill pauses everything, enqueues a late batch, wipes Redis while paused,
checks that nothing is POSTed, cancels the late batch and resumes. No process (worker,
beat, web receiver) may exit on its own. Then everything must settle and the ledger must
agree with the sandbox and with itself: no forged state applied, nothing cancelled that
the provider received.

The run is driven by one seed, printed at the start; replay a failure with
``CHAOS_SEED=<seed> pytest tests/chaos -s``. On failure the seed and the cluster's log
directory (kept) are printed; ``CHAOS_KEEP_LOGS=1`` keeps the logs of a passing run too.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis

import worker
from tests import ledger_reads
from tests.app_receiver import DROP, AppReceiver
from tests.chaos.forgery import OTHER_ACCOUNT, REFUSALS, WELL_KNOWN, Forger
from tests.support.cluster import EXPECTED_STATE, fast_sandbox, running_cluster
from tests.support.events import assert_delivered, states_went_through
from tests.support.waiting import patiently, wait_for
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.settings import Settings
from worker.core.states import SETTLED_STATES, State
from worker.dev.cluster import LocalCluster
from worker.flows.controls import ControlResult
from worker.ledger import Ledger, Order
from worker.sandbox.config import APP_SECRET as PUBLIC_SANDBOX_SECRET

pytestmark = pytest.mark.chaos

SEED = int(os.environ.get("CHAOS_SEED") or 20250607)
MARKETS = ("ID", "AR", "JP", "KH")
PER_MARKET = 500
CHAOS_SECONDS = 60.0  # SIGKILLs (and the outages) for this long
REDIS_DOWN = 5.0  # seconds Redis is away, once, mid-way
POSTGRES_DOWN = 3.0  # seconds PostgreSQL is away, twice
# Then everything must be final (or REVIEW) within this: a claim lost to the last kill
# is looked up after the claim lease (72.5 s here) and the next pass (30 s), and may be
# resubmitted and looked up again; the slowest recovery path with the defaults.
SETTLE_TIMEOUT = 300.0
WORKERS = 3
# Two provider accounts, neither with the sandbox's public secret: ID, JP and KH on the
# plain one, AR on its own (a forger may hold one account's secret).
PLAIN_SECRET = "chaos-plain-S3CRET-7q"
AR_MERCHANT, AR_SECRET = "M-AR-CHAOS", "chaos-ar-S3CRET-9w"
SECRETS = {"ID": PLAIN_SECRET, "JP": PLAIN_SECRET, "KH": PLAIN_SECRET, "AR": AR_SECRET}
CANCELLED_MARKET = "KH"  # its batch is cancelled while it is being sent
LATE_PAYOUTS = 100  # enqueued during the incident drill, while paused, then cancelled
PAUSE_SETTLES = 1.0  # POSTs begun before the pause reach the sandbox within this
PAUSED_FOR = 5.0  # no POST at all for this long while paused, Redis wiped

# The settings a user gets (Settings' defaults: the cluster's own test settings are
# undone here), except these, each scaled with the sandbox, not with our recovery:
_USER = Settings()
NOT_FOUND_CODE = "9001"  # the sandbox's answer to a query of a tradeNo it never stored
ENV = {
    # Issue 21.6: only the codes named here mean "no such order" (default 4004).
    "NOT_FOUND_CODES": NOT_FOUND_CODE,
    "SUBMIT_BUDGET": str(_USER.submit_budget),
    "RECONCILE_EVERY": str(_USER.reconcile_every),
    "REVIEW_AFTER": str(_USER.review_after),
    # The sandbox answers on loopback in milliseconds, and its accept-then-hang fault
    # (hang_seconds) must outlast the read timeout to leave an outcome unknown: 1.5 s is
    # as long against its latency as the default 15 s against a real provider's.
    "HTTP_CONNECT_TIMEOUT": "1",
    "HTTP_READ_TIMEOUT": "1.5",
    # The sandbox settles a payout within a second and retries a webhook after a
    # fraction of one (its schedule scaled by 0.02): 5 s is as long against that as the
    # default 60 s against a real provider's.
    "RECONCILE_AFTER": "5",
    # The wipe loses the message of every QUEUED order; the sweeper publishes them again
    # once the submit queues are empty and they have waited SWEEP_AFTER. That timer is
    # how long a QUEUED order may wait behind a queue that is already empty (retry
    # back-off, a prefetched message): seconds here, where the batch takes about a
    # minute, so 30 s is as long against that as the default 300 s against a real batch.
    # Too short would only publish a copy, which the claim makes harmless.
    "SWEEP_AFTER": "30",
    # The provider account's limits, not timers of ours: the 1,500 payouts not cancelled
    # take about a minute, the chaos's length, however many POSTs are in flight.
    "VEXORA_RATE_LIMIT": "25/s",
    "VEXORA_AR_MERCHANT_NO": AR_MERCHANT,
    "VEXORA_AR_APP_SECRET": AR_SECRET,
    "DETAILS_RATE_LIMIT": "100/s",
}

# The application's webhook endpoint misbehaves too: it drops some requests (the
# connection closed, no answer), answers others late, a few after the sender's 10 s.
APP_SECRET = "whsec-chaos"
APP_DROP = 0.03
APP_SLOW = 0.05  # answered after 0.2 to 1.5 s
APP_HANG = 0.003  # answered after 11 s: no answer in time
# Once every payout settled, its events reach the application within this.
DELIVERY_TIMEOUT = 240.0

INDEXED_STATES = (
    State.HELD,
    State.QUEUED,
    State.SUBMITTING,
    State.PROCESSING,
    State.UNKNOWN,
    State.REVIEW,
)


def say(message: str) -> None:
    print(f"[chaos seed={SEED}] {message}", flush=True)


def sandbox_config() -> Any:
    return fast_sandbox(
        seed=SEED,
        settle_delay=(0.1, 1.0),
        failure_ratio=0.1,
        # HTTP 500, half of them before the payout is recorded: those must be found
        # unknown to the provider and resubmitted after the no-record grace period.
        error_ratio=0.10,
        error_after_record_share=0.5,
        # A query of a tradeNo the provider never stored answers an undocumented code,
        # not the sandbox's default: the run names it in NOT_FOUND_CODES (ENV).
        not_found_code=NOT_FOUND_CODE,
        # A repeated tradeNo is refused at the API layer with 8000: a resubmission of a
        # payout that did arrive must end in the provider's state, never FAILED.
        repeat_code="8000",
        hang_ratio=0.05,  # recorded, then no answer for longer than HTTP_READ_TIMEOUT
        hang_seconds=2.5,
        drop_webhook_ratio=0.05,
        duplicate_webhook_ratio=0.10,
        token_lifetime=5.0,  # the details API's token expires many times in a run
        app_secret=PLAIN_SECRET,
        accounts={AR_MERCHANT: {"app_secret": AR_SECRET}},
    )


class Misbehaving:
    """The application endpoint's answers, drawn from the run's seed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, _event: dict[str, Any]) -> int:
        with self.lock:
            draw, delay = self.rng.random(), self.rng.uniform(0.2, 1.5)
        if draw < APP_DROP:
            self.counts["dropped"] += 1
            return DROP
        if draw < APP_DROP + APP_HANG:
            self.counts["hung"] += 1
            time.sleep(11.0)
        elif draw < APP_DROP + APP_HANG + APP_SLOW:
            self.counts["slow"] += 1
            time.sleep(delay)
        return 200


def enqueue_all() -> list[str]:
    batch_ids = []
    for market in MARKETS:
        result = worker.enqueue_batch(market, sample_rows(market, PER_MARKET, seed=SEED))
        assert result.rejected == [] and result.batch_id is not None
        assert result.accepted == PER_MARKET
        batch_ids.append(result.batch_id)
    return batch_ids


def progress(ledger: Ledger) -> str:
    counts = patiently(ledger.state_counts)
    return " ".join(f"{state}={n}" for state, n in sorted(counts.items()))


class Drills:
    """An operator's actions during the run (issue 21), and what each came back with."""

    def __init__(self, cluster: LocalCluster, batches: dict[str, str]) -> None:
        self.cluster = cluster
        self.batches = batches  # market -> batch id
        self.cancelled: ControlResult | None = None
        self.late_batch: str | None = None
        self.late_cancelled: ControlResult | None = None
        self.posts_while_paused: int | None = None

    def cancel_mid_run(self) -> None:
        """Cancel a batch while it is being sent: only its payouts never POSTed may go."""
        batch = self.batches[CANCELLED_MARKET]
        self.cancelled = result = patiently(lambda: worker.cancel(batch))
        say(f"cancelled {result.moved}, not cancelled {len(result.not_cancelled)} (may be sent)")

    def incident(self) -> None:
        """Pause; a late batch enqueued; Redis wiped while paused (the pause is
        PostgreSQL's); nothing POSTed; the late batch cancelled; resume."""
        patiently(lambda: worker.pause("chaos: incident drill", operator="chaos-drill"))
        late = sample_rows("ID", LATE_PAYOUTS, seed=SEED, start=PER_MARKET)
        batch = patiently(lambda: worker.enqueue_batch("ID", late)).batch_id
        assert batch is not None
        self.late_batch = batch
        time.sleep(PAUSE_SETTLES)
        before = payout_requests(self.cluster)
        wipe_redis(self.cluster)
        time.sleep(PAUSED_FOR)
        self.posts_while_paused = payout_requests(self.cluster) - before
        self.late_cancelled = patiently(lambda: worker.cancel(batch))
        patiently(lambda: worker.resume(operator="chaos-drill"))
        say(f"paused {PAUSED_FOR:g} s across a wipe: {self.posts_while_paused} POSTs; resumed")


def payout_requests(cluster: LocalCluster) -> int:
    return int(cluster.sandbox.stats()["payout_requests"])


def unleash(
    cluster: LocalCluster, rng: random.Random, ledger: Ledger, drills: Drills
) -> dict[str, Any]:
    """SIGKILL a worker every 1-2 s and start it again; meanwhile, once each and in this
    order: cancel a batch, stop PostgreSQL, crash PostgreSQL, take Redis away, the
    incident drill (a wipe while paused), wipe Redis.

    A worker found exited before its turn to be killed died on its own (of an outage):
    that is recorded, and it is started again so the run goes on.
    """
    start = time.monotonic()
    # The wipe comes last: the orders whose messages it loses wait for the sweeper, and
    # the system is idle until then, so an outage meanwhile would hit no work. The batch
    # lasts the whole minute (the provider's limit, ENV), so every fault hits work going on.
    faults = [
        (
            0.05,
            0.12,
            "cancels",
            f"batch {CANCELLED_MARKET} cancelled mid-run",
            drills.cancel_mid_run,
        ),
        (
            0.15,
            0.30,
            "postgres_restarts",
            f"PostgreSQL stopped for {POSTGRES_DOWN:g} s",
            lambda: cluster.restart_postgres(down_for=POSTGRES_DOWN),
        ),
        (
            0.35,
            0.50,
            "postgres_crashes",
            f"PostgreSQL crashed (SIGKILL), down for {POSTGRES_DOWN:g} s",
            lambda: cluster.restart_postgres(down_for=POSTGRES_DOWN, crash=True),
        ),
        (
            0.52,
            0.62,
            "redis_restarts",
            f"Redis down for {REDIS_DOWN:g} s",
            lambda: cluster.restart_redis(down_for=REDIS_DOWN),
        ),
        (
            0.64,
            0.74,
            "incidents",
            "incident drill: paused, a late batch, Redis wiped while paused",
            drills.incident,
        ),
        (0.80, 0.92, "redis_wiped", "Redis wiped (FLUSHALL)", lambda: wipe_redis(cluster)),
    ]
    pending = [
        (start + CHAOS_SECONDS * rng.uniform(low, high), name, what, act)
        for low, high, name, what, act in faults
    ]
    done: dict[str, int] = dict.fromkeys((name for _, _, name, _, _ in faults), 0)
    kills = 0
    died: list[str] = []
    next_report = start + 10
    while time.monotonic() - start < CHAOS_SECONDS:
        time.sleep(rng.uniform(1.0, 2.0))
        died += [f"worker{i} ({code})" for i, code in sorted(worker_exits(cluster).items())]
        index = rng.randrange(cluster.worker_count)
        cluster.kill_worker(index)
        cluster.start_worker(index)
        kills += 1
        if pending and time.monotonic() >= pending[0][0]:
            _, name, what, act = pending.pop(0)
            say(f"{what} at {time.monotonic() - start:.0f} s")
            act()
            done[name] += 1
        if time.monotonic() >= next_report:
            say(f"{time.monotonic() - start:.0f} s, {kills} kills: {progress(ledger)}")
            next_report += 10
    return {"kills": kills, **done, "died_on_their_own": died}


def wipe_redis(cluster: LocalCluster) -> None:
    """Everything in Redis gone at once, as a restart without persistence would leave it."""
    client = redis.Redis.from_url(cluster.redis.url)
    try:
        client.flushall()
    finally:
        client.close()


def worker_exits(cluster: LocalCluster) -> dict[int, int | None]:
    """Workers that exited without being killed; each is started again."""
    exited = {
        i: w.returncode
        for i, w in enumerate(cluster.workers)
        if w is not None and w.poll() is not None
    }
    for index in exited:
        cluster.start_worker(index)
    return exited


def wait_settled(ledger: Ledger, batch_ids: list[str], timeout: float) -> None:
    """As tests.support.waiting's, through the outages, saying how far it got every 10 s."""
    next_report = [time.monotonic() + 10]

    def settled() -> bool:
        summaries = patiently(lambda: [ledger.batch(b) for b in batch_ids])
        if all(s is not None and s.settled for s in summaries):
            return True
        if time.monotonic() >= next_report[0]:
            say(f"settling: {progress(ledger)}")
            next_report[0] += 10
        return False

    wait_for(
        "settled after the chaos",
        settled,
        timeout,
        interval=0.5,
        seen=lambda: f"{progress(ledger)}\n" + describe_unsettled(ledger, batch_ids),
    )


def describe_unsettled(ledger: Ledger, batch_ids: list[str], limit: int = 15) -> str:
    """What a person needs to see about orders that did not settle: their history, and
    what Redis coordinates for them (lease deadline, lookup marker's TTL)."""
    leases, in_flight = runtime.leases(), runtime.in_flight()
    lines: list[str] = []
    for batch_id in batch_ids:
        for page in ledger.iter_batch(batch_id):
            for order in ledger.get_many(page):
                if order is None or order.state in SETTLED_STATES or len(lines) >= limit:
                    continue
                history = ", ".join(
                    f"{ms % 1_000_000} {e}"
                    for ms, e in ledger_reads.history(ledger, order.trade_no)
                )
                lease = leases.redis.zscore(leases.key, order.trade_no)
                marker = in_flight.redis.pttl(in_flight.key(order.trade_no))
                lines.append(
                    f"{order.trade_no} {order.state} attempts={order.attempts} "
                    f"ptn={order.platform_trade_no} now={ledger.now_ms() % 1_000_000}\n"
                    f"    history: {history}\n"
                    f"    lease due (ms): {lease and int(lease) % 1_000_000}, "
                    f"lookup marker pttl (ms): {marker}"
                )
    return "\n".join(lines)


def all_orders(ledger: Ledger, batch_ids: list[str]) -> dict[str, list[Order]]:
    by_batch: dict[str, list[Order]] = {}
    for batch_id in batch_ids:
        orders = [o for page in ledger.iter_batch(batch_id) for o in ledger.get_many(page)]
        assert all(o is not None for o in orders), f"batch {batch_id} lists a missing order"
        by_batch[batch_id] = [o for o in orders if o is not None]
    return by_batch


def assert_paid_at_most_once(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    paid = cluster.sandbox.payouts()
    twice = {t: r["accepted_count"] for t, r in paid.items() if r["accepted_count"] != 1}
    assert twice == {}, f"tradeNos accepted more than once: {twice}"
    assert cluster.sandbox.stats()["duplicate_payments"] == 0
    return paid


def assert_ledger_agrees_with_sandbox(
    orders: list[Order], paid: dict[str, dict[str, Any]]
) -> Counter[str]:
    """Each order final as the sandbox settled it; REVIEW only with a reason."""
    known = {o.trade_no for o in orders}
    strangers = set(paid) - known
    assert not strangers, f"the sandbox received tradeNos the ledger does not have: {strangers}"
    problems: list[str] = []
    tally: Counter[str] = Counter()
    for order in orders:
        record = paid.get(order.trade_no)
        if order.state not in SETTLED_STATES:
            problems.append(f"{order.trade_no}: left in {order.state}")
        elif order.state is State.CANCELLED:
            # Only a payout no POST was ever started for may be cancelled.
            tally["cancelled"] += 1
            if record is not None:
                problems.append(f"{order.trade_no}: CANCELLED but the sandbox received it")
        elif order.state is State.REVIEW:
            tally["review"] += 1
            if not order.reason:
                problems.append(f"{order.trade_no}: REVIEW without a reason")
        elif record is None:
            # Never accepted by the provider: only a documented refusal may fail it.
            tally["never_accepted"] += 1
            if order.state is not State.FAILED or not order.provider_status:
                problems.append(f"{order.trade_no}: {order.state} but the sandbox never had it")
        else:
            tally[record["status"]] += 1
            expected = EXPECTED_STATE.get(record["status"])
            if order.state is not expected:
                problems.append(
                    f"{order.trade_no}: ledger {order.state}, sandbox {record['status']}"
                )
            elif order.platform_trade_no != record["platFormTradeNo"]:
                problems.append(f"{order.trade_no}: platFormTradeNo differs from the sandbox's")
        if order.discrepancy:
            problems.append(f"{order.trade_no}: discrepancy recorded: {order.discrepancy}")
    assert not problems, f"{len(problems)} orders disagree:\n" + "\n".join(problems[:40])
    return tally


def assert_counts_add_up(
    ledger: Ledger, by_batch: dict[str, list[Order]], sizes: dict[str, int]
) -> None:
    """Batch counts, amounts, cluster counts and state indexes equal a recount of orders."""
    overall: Counter[State] = Counter()
    for batch_id, orders in by_batch.items():
        summary = ledger.batch(batch_id)
        assert summary is not None
        recount = Counter(o.state for o in orders)
        overall += recount
        assert summary.total == len(orders) == sizes[batch_id]
        assert summary.counts == dict(recount), (batch_id, summary.counts, recount)
        amounts: dict[State, dict[str, Decimal]] = defaultdict(dict)
        for o in orders:
            amounts[o.state][o.currency] = amounts[o.state].get(o.currency, Decimal(0)) + o.amount
        assert summary.amounts == dict(amounts), (batch_id, summary.amounts, amounts)
        assert summary.discrepancies == 0
    assert ledger.state_counts() == dict(overall)
    for state in INDEXED_STATES:
        assert ledger.count(state) == overall.get(state, 0), state
    assert not ledger_reads.discrepancies(ledger)


def recovery_paths(ledger: Ledger, orders: list[Order]) -> Counter[str]:
    """How orders got where they are, read from their histories (order_events):
    evidence that the failure paths this test is about were taken, not only the happy one."""
    paths: Counter[str] = Counter()
    for order in orders:
        # Each entry is "STATE source note" (the note may be empty or several words).
        steps = [
            (*entry.split(" ", 2), "")[:3]
            for _, entry in ledger_reads.history(ledger, order.trade_no)
        ]
        if sum(1 for state, _, _ in steps if state == State.SUBMITTING) > 1:
            paths["claimed more than once"] += 1
        for (before, _, _), (after, source, note) in pairwise(steps):
            if before == State.SUBMITTING and after == State.QUEUED and source == "lookup":
                paths["claim lost before the POST: requeued"] += 1
            elif before == State.SUBMITTING and source == "lookup":
                paths["claim lost after the POST: provider's state taken"] += 1
            elif before == State.SUBMITTING and source == "webhook":
                paths["webhook before the POST's answer"] += 1
            elif after == State.QUEUED and source == "sweeper":
                paths["message lost: swept"] += 1
            elif before == State.UNKNOWN and after == State.QUEUED:
                paths["unknown outcome, provider had nothing: resubmitted"] += 1
            elif before == State.UNKNOWN:
                paths[f"unknown outcome resolved by {source}{note and ' ' + note}"] += 1
    return paths


def trade_nos(ledger: Ledger, batch_id: str) -> list[str]:
    return [t for page in ledger.iter_batch(batch_id) for t in page]


def republished_of_dead_tasks(cluster: LocalCluster) -> int:
    """Orders the reconcile passes published again because their submit task died."""
    found = 0
    for log in cluster.log_dir.glob("worker*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "whose submit task died" in line and '"worker.flows.reconcile"' in line:
                found += int(line.split("republished ", 1)[1].split(" ", 1)[0])
    return found


@pytest.mark.timeout(720)
def test_kills_outages_wipe_and_provider_faults_never_pay_twice_or_lose_a_payout() -> None:
    say(f"replay with CHAOS_SEED={SEED}")
    rng = random.Random(SEED)
    log_dir = Path(tempfile.mkdtemp(prefix="disburse-chaos-"))
    started = time.monotonic()
    answers = Misbehaving(random.Random(SEED))
    try:
        with (
            AppReceiver(APP_SECRET, answer=answers) as app,
            running_cluster(
                workers=WORKERS,
                appendonly=True,
                sandbox=sandbox_config(),
                env={**ENV, "APP_WEBHOOK_URL": app.url, "APP_WEBHOOK_SECRET": APP_SECRET},
                log_dir=log_dir,
            ) as cluster,
        ):
            cluster.start_beat()  # a second beat, started by mistake: must change nothing
            ledger = runtime.ledger()
            batch_ids = enqueue_all()
            say(f"enqueued {len(MARKETS) * PER_MARKET} payouts in batches {batch_ids}")
            drills = Drills(cluster, dict(zip(MARKETS, batch_ids, strict=True)))
            forger = Forger(
                cluster.receiver_url,
                [(t, m) for m, b in drills.batches.items() for t in trade_nos(ledger, b)],
                SECRETS,
                well_known=PUBLIC_SANDBOX_SECRET,
                seed=SEED,
            )
            forger.start()
            try:
                chaos = unleash(cluster, rng, ledger, drills)
            finally:
                forger.stop()
            say(f"chaos over after {time.monotonic() - started:.0f} s: {chaos}")
            assert drills.late_batch is not None
            sizes = {b: PER_MARKET for b in batch_ids} | {drills.late_batch: LATE_PAYOUTS}
            batch_ids = [*batch_ids, drills.late_batch]
            wait_settled(ledger, batch_ids, SETTLE_TIMEOUT)
            say(f"settled after {time.monotonic() - started:.0f} s")

            assert chaos["kills"] >= CHAOS_SECONDS / 2.5
            assert chaos["redis_wiped"] == chaos["redis_restarts"] == 1
            assert chaos["incidents"] == chaos["cancels"] == 1
            assert chaos["postgres_restarts"] == chaos["postgres_crashes"] == 1
            assert chaos["died_on_their_own"] == [], "workers exited on an outage"
            assert cluster.exited() == {}, "processes exited during the run"
            paid = assert_paid_at_most_once(cluster)
            by_batch = all_orders(ledger, batch_ids)
            orders = [o for batch in by_batch.values() for o in batch]
            tally = assert_ledger_agrees_with_sandbox(orders, paid)
            assert_counts_add_up(ledger, by_batch, sizes)
            # Forgeries: every one refused (or "later" during an outage), none applied
            # (the ledger agrees with the sandbox, above, provider ids included).
            say(f"forged notifications answered: {forger.answers}")
            for kind in (WELL_KNOWN, OTHER_ACCOUNT):
                assert forger.answers[kind][401] > 0, (kind, forger.answers[kind])
                assert set(forger.answers[kind]) <= REFUSALS, (kind, forger.answers[kind])
            # The pause held across the wipe; the late batch was never sent, all cancelled.
            assert drills.posts_while_paused == 0, "POSTs while paused after the Redis wipe"
            late = drills.late_cancelled
            assert late is not None and late.moved == LATE_PAYOUTS and not late.not_cancelled
            assert {o.state for o in by_batch[drills.late_batch]} == {State.CANCELLED}
            # The batch cancelled mid-run: some payouts cancelled (never sent: checked
            # against the sandbox above); those that may have been sent went on to a
            # final state through the provider.
            cancelled = drills.cancelled
            assert cancelled is not None and cancelled.moved > 0, cancelled
            state_of = {o.trade_no: o.state for o in orders}
            assert not any(state_of[t] is State.CANCELLED for t in cancelled.not_cancelled)
            paths = recovery_paths(ledger, orders)
            say(f"recovery paths taken: {dict(paths)}")
            assert (
                paths["claim lost before the POST: requeued"]
                + paths["claim lost after the POST: provider's state taken"]
                > 0
            ), "no claim was ever recovered: the kills missed every POST"
            # Orders whose messages the wipe lost came back through the sweeper.
            assert paths["message lost: swept"] > 0, "the sweeper republished nothing"
            # Orders a killed worker had not claimed yet came back through their leases
            # (the sweeper waits for empty queues and SWEEP_AFTER).
            republished = republished_of_dead_tasks(cluster)
            say(f"orders of killed submit tasks published again: {republished}")
            assert republished > 0, "no killed submit task left an order to republish"

            # The application saw every state of every payout, in order, the final one last.
            expected = states_went_through(ledger, batch_ids)
            assert_delivered(app, expected, timeout=DELIVERY_TIMEOUT)
            assert all(p[-1] == o.state for o in orders for p in [expected[o.trade_no]])
            say(
                f"application endpoint: {sum(map(len, expected.values()))} events acknowledged "
                f"after {time.monotonic() - started:.0f} s, {app.arrived} requests verified, "
                f"{app.refused} refused, answers {dict(answers.counts)}"
            )
            assert answers.counts["dropped"] > 0 and answers.counts["hung"] > 0
            assert app.refused == 0

            stats = cluster.sandbox.stats()
            # The faults did happen (otherwise this test proves nothing).
            assert stats["errors_before_record"] > 0 and stats["errors_after_record"] > 0
            assert stats["hangs"] > 0
            assert stats["webhooks_dropped"] > 0 and stats["webhooks_duplicated"] > 0
            assert stats["tokens_issued"] >= 2, "the OAuth token never had to be renewed"
            posts = sum(r["post_count"] for r in paid.values())
            say(
                f"passed in {time.monotonic() - started:.0f} s: {dict(tally)}; "
                f"{len(paid)} accepted from {posts} POSTs of known tradeNos, "
                f"{stats['repeated_trade_no_posts']} repeats refused; hangs {stats['hangs']}, "
                f"5xx {stats['errors_before_record'] + stats['errors_after_record']}, "
                f"tokens {stats['tokens_issued']}, webhooks dropped {stats['webhooks_dropped']} "
                f"duplicated {stats['webhooks_duplicated']}"
            )
    except BaseException:
        say(f"FAILED after {time.monotonic() - started:.0f} s; cluster logs kept in {log_dir}")
        say(f"replay with CHAOS_SEED={SEED}")
        raise
    if os.environ.get("CHAOS_KEEP_LOGS"):
        say(f"cluster logs kept in {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
