"""The submit flow, in groups of orders, on the test ledger and fakeredis, against fakes of
the provider and the limiter."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import redis
from redis.client import Pipeline

from schemas import Payout
from tests import ledger_reads
from tests.unit.ledger_sql import backdate
from worker.coordination.breaker import Breaker
from worker.coordination.metrics import Metrics
from worker.coordination.pause import PauseSwitch
from worker.coordination.pause_store import PauseStore
from worker.coordination.ratelimit import RateLimiter, RateLimitTimeout, Slots
from worker.core.defaults import MAX_SUBMIT_ATTEMPTS, PAUSE_LOOK_EVERY, SUBMIT_GROUP
from worker.core.exceptions import (
    AlreadySubmitted,
    ConfigurationRejected,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Refused,
    Rejected,
)
from worker.core.settings import DEFAULT_SYSTEMIC_CODES, Rate
from worker.core.states import State
from worker.flows.heartbeat import ClaimHeartbeat
from worker.flows.market_submitters import MarketSubmitters
from worker.flows.submit import ClaimHolder, Submitter
from worker.ledger import Ledger
from worker.provider.answers import PayoutResult

FIELDS = {"amount": "100000", "bankAccountNo": "5464438554636", "bankCode": "0002"}


class FakeProvider:
    def __init__(self, answer: Callable[[str], PayoutResult]) -> None:
        self.answer = answer
        self.posts: list[tuple[str, dict[str, str]]] = []

    def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult:
        self.posts.append((trade_no, dict(fields)))
        return self.answer(trade_no)


class FakeLimiter:
    """Grants the slot tried with the claim, unless told to make callers wait."""

    def __init__(
        self, *, wait: bool = False, timeout: bool = False, on_acquire: Callable[[], object] = list
    ) -> None:
        self.wait = wait or timeout
        self.timeout = timeout
        self.on_acquire = on_acquire
        self.acquired = 0
        self.penalties: list[float] = []

    def queue_take(self, pipe: Pipeline, count: int) -> None:
        pipe.echo(str(count))

    def slots(self, reply: object) -> Slots:
        return Slots() if self.wait else Slots(deque([time.monotonic()] * int(str(reply))))

    def acquire(self, timeout: float | None = None) -> float:
        if self.timeout:
            raise RateLimitTimeout("budget")
        self.on_acquire()
        self.acquired += 1
        return 0.5

    def penalize(self, seconds: float) -> None:
        self.penalties.append(seconds)


def accepted(status: str = "0015") -> Callable[[str], PayoutResult]:
    state = {"0015": State.PROCESSING, "0000": State.SUCCEEDED, "00029": State.FAILED}[status]
    return lambda t: PayoutResult(t, "PLAT-" + t[:6], status, "Processing", state, None)


def raising(exc: Exception) -> Callable[[str], PayoutResult]:
    def answer(trade_no: str) -> PayoutResult:
        raise exc

    return answer


def make(
    ledger: Ledger,
    client: redis.Redis,
    answer: Callable[[str], PayoutResult],
    limiter: FakeLimiter | RateLimiter | None = None,
    metrics: Metrics | None = None,
    account: str | None = None,
    heartbeat: ClaimHolder | None = None,
) -> tuple[Submitter, FakeProvider, list[str]]:
    provider = FakeProvider(answer)
    recovered: list[str] = []
    submitter = Submitter(
        ledger,
        provider,
        limiter or FakeLimiter(),
        PauseSwitch(client, prefix="t", account=account),
        claim_lease=60.0,
        recover=recovered.append,
        metrics=metrics,
        late_slot=math.inf,  # a slot used late: test_a_sender_late_for_its_slot_takes_a_new_one
        heartbeat=heartbeat,
    )
    return submitter, provider, recovered


def new_orders(ledger: Ledger, n: int = 1, market: str = "ID", batch: str = "b") -> list[str]:
    payouts = [Payout(market, "IDR", Decimal("100000"), None, FIELDS) for _ in range(n)]
    made = ledger.create_orders(payouts, batch_id=batch + market, market=market)
    return [t for t, _ in made]


def state(ledger: Ledger, trade_no: str) -> State:
    order = ledger.get(trade_no)
    assert order is not None
    return order.state


@pytest.mark.parametrize(
    ("status", "expected"),
    [("0015", State.PROCESSING), ("0000", State.SUCCEEDED), ("00029", State.FAILED)],
)
def test_accepted_answer_sets_the_state_and_provider_id(
    ledger: Ledger, fake_redis: redis.Redis, status: str, expected: State
) -> None:
    submitter, provider, _ = make(ledger, fake_redis, accepted(status))
    (t,) = new_orders(ledger)
    report = submitter.run([t], budget=10)
    assert report.done == 1
    assert provider.posts == [(t, FIELDS)]  # exactly the stored fields, our tradeNo
    order = ledger.get(t)
    assert order is not None
    assert (order.state, order.platform_trade_no, order.provider_status) == (
        expected, "PLAT-" + t[:6], status,
    )  # fmt: skip


def test_not_sent_goes_back_to_queued_with_backoff(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, _, _ = make(ledger, fake_redis, raising(NotSent("refused")))
    (t,) = new_orders(ledger)
    report = submitter.run([t], budget=10)
    assert state(ledger, t) is State.QUEUED
    ((retried, delay),) = report.retry
    assert retried == t and 0 < delay <= 1.0


def test_not_sent_too_often_goes_to_review(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, provider, _ = make(ledger, fake_redis, raising(NotSent("refused")))
    (t,) = new_orders(ledger)
    for _ in range(MAX_SUBMIT_ATTEMPTS):
        submitter.run([t], budget=10)
    order = ledger.get(t)
    assert order is not None and order.state is State.REVIEW
    assert order.reason and "not sent after 8 attempts" in order.reason
    assert len(provider.posts) == MAX_SUBMIT_ATTEMPTS


def test_rate_limited_slows_everyone_and_retries(ledger: Ledger, fake_redis: redis.Redis) -> None:
    limiter = FakeLimiter()
    submitter, _, _ = make(
        ledger, fake_redis, raising(RateLimited("429", retry_after=2.0)), limiter
    )
    (t,) = new_orders(ledger)
    report = submitter.run([t], budget=10)
    assert limiter.penalties == [2.0]
    assert report.retry == [(t, 2.0)]
    assert state(ledger, t) is State.QUEUED


@pytest.mark.parametrize("exc", [OutcomeUnknown("read timeout"), AlreadySubmitted("dup")])
def test_maybe_sent_becomes_unknown_and_is_queried(
    ledger: Ledger, fake_redis: redis.Redis, exc: Exception
) -> None:
    submitter, _, _ = make(ledger, fake_redis, raising(exc))
    (t,) = new_orders(ledger)
    report = submitter.run([t], budget=10)
    assert report.query == [t]
    assert state(ledger, t) is State.UNKNOWN


def test_documented_rejection_of_the_first_attempt_fails_the_payout(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitter, _, _ = make(ledger, fake_redis, raising(Rejected("8000", "bad account")))
    (t,) = new_orders(ledger)
    submitter.run([t], budget=10)
    order = ledger.get(t)
    assert order is not None
    assert (order.state, order.provider_status, order.attempts) == (State.FAILED, "8000", 1)


def first_post_not_sent(ledger: Ledger, fake_redis: redis.Redis, trade_no: str) -> None:
    """The order's first POST certainly never arrived: it is back in QUEUED."""
    submitter, _, _ = make(ledger, fake_redis, raising(NotSent("refused")))
    assert submitter.run([trade_no], budget=10).retry


def test_rejection_of_a_repeat_attempt_is_queried_not_failed(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    # Any attempt after the first may repeat a POST the provider has (and paid): a
    # top-level refusal may be its answer to the repeated tradeNo.
    (t,) = new_orders(ledger)
    first_post_not_sent(ledger, fake_redis, t)
    submitter, provider, _ = make(ledger, fake_redis, raising(Rejected("8000", "request failed")))
    report = submitter.run([t], budget=10)
    assert report.query == [t] and report.done == 0
    order = ledger.get(t)
    assert order is not None
    assert (order.state, order.attempts, order.provider_status) == (State.UNKNOWN, 2, "8000")
    assert len(provider.posts) == 1


def test_systemic_rejection_of_a_repeat_attempt_still_pauses(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    (t,) = new_orders(ledger)
    first_post_not_sent(ledger, fake_redis, t)
    submitter, _, _ = make(ledger, fake_redis, raising(ConfigurationRejected("4001", "sign error")))
    assert submitter.run([t], budget=10).paused
    assert state(ledger, t) is State.QUEUED


def test_configuration_rejection_pauses_the_cluster_and_keeps_orders_queued(
    ledger: Ledger,
    fake_redis: redis.Redis,
) -> None:
    submitter, provider, _ = make(
        ledger, fake_redis, raising(ConfigurationRejected("4001", "sign error"))
    )
    trade_nos = new_orders(ledger, 5)
    report = submitter.run(trade_nos, budget=10)
    assert report.paused
    assert len(provider.posts) == 1  # the first rejection stops everything
    assert {state(ledger, t) for t in trade_nos} == {State.QUEUED}
    reason = PauseSwitch(fake_redis, prefix="t").reason()
    assert reason is not None and "4001" in reason


def test_paused_cluster_sends_nothing_and_resumes(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, provider, _ = make(ledger, fake_redis, accepted())
    trade_nos = new_orders(ledger, 3)
    switch = PauseSwitch(fake_redis, prefix="t")
    switch.pause("operator")
    assert submitter.run(trade_nos, budget=10).paused
    assert provider.posts == []
    # The switch is read before the claim: not even claimed and given back.
    assert all(len(ledger_reads.history(ledger, t)) == 1 for t in trade_nos)
    switch.resume()
    assert submitter.run(trade_nos, budget=10).done == 3


def test_duplicate_delivery_never_posts_again(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, provider, recovered = make(ledger, fake_redis, accepted())
    (t,) = new_orders(ledger)
    submitter.run([t], budget=10)
    submitter.run([t], budget=10)  # a second message for the same order
    assert len(provider.posts) == 1
    assert recovered == []


def test_claim_held_by_a_live_worker_is_left_alone(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, provider, recovered = make(ledger, fake_redis, accepted())
    (t,) = new_orders(ledger)
    assert ledger.claim(t)[0].moved  # another worker's claim
    assert submitter.run([t], budget=10).done == 0
    assert provider.posts == [] and recovered == []


def test_expired_claim_is_recovered_by_asking_the_provider(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitter, provider, recovered = make(ledger, fake_redis, accepted())
    (t,) = new_orders(ledger)
    assert ledger.claim(t)[0].moved
    backdate(ledger, t, 3600)  # claimed long ago
    submitter.run([t], budget=10)
    assert provider.posts == []
    assert recovered == [t]


def test_a_claim_whose_lease_expired_is_recovered_however_young(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitter, provider, recovered = make(ledger, fake_redis, accepted())
    (t,) = new_orders(ledger)
    assert ledger.claim(t)[0].moved
    backdate(ledger, t, 20)  # claimed 20 s ago (claim_lease is 60), never renewed
    submitter.run([t], budget=10)
    assert provider.posts == [] and recovered == [t]


def test_claims_are_held_by_the_heartbeat_from_claim_to_outcome(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    heartbeat = ClaimHeartbeat(ledger, ttl=180)  # no renewal needed in this test
    held_during_posts: list[list[str]] = []

    def answer(trade_no: str) -> PayoutResult:
        held_during_posts.append(heartbeat.held())
        if len(held_during_posts) == 3:
            raise RuntimeError("a bug in the middle of a group")
        return accepted()(trade_no)

    submitter, _, _ = make(ledger, fake_redis, answer, heartbeat=heartbeat)
    a, b, c = new_orders(ledger, 3)
    submitter.run([a], budget=10)  # a group of one, then (slots free) of two
    with pytest.raises(RuntimeError):
        submitter.run([b, c], budget=10)
    assert held_during_posts == [[a], [b, c], [b, c]]
    assert heartbeat.held() == []  # dropped, also when the group ended in an error
    heartbeat.stop()


class LapsedHeartbeat:
    """A heartbeat whose renewals have been failing: no claim is alive for a POST."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def hold(self, trade_nos: Sequence[str]) -> None:
        self.held += trade_nos

    def drop(self, trade_nos: Sequence[str]) -> None:
        self.held = [t for t in self.held if t not in trade_nos]

    def alive(self, trade_no: str) -> bool:
        return False


def test_no_post_starts_on_a_claim_whose_lease_may_have_run_out(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    heartbeat = LapsedHeartbeat()
    submitter, provider, _ = make(ledger, fake_redis, accepted(), heartbeat=heartbeat)
    (t,) = new_orders(ledger)
    assert submitter.run([t], budget=10).done == 0
    # A lookup may take it for abandoned now, counting on no POST of it starting later.
    assert provider.posts == [] and state(ledger, t) is State.SUBMITTING
    assert heartbeat.held == []


def test_budget_spent_leaves_the_rest_queued(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, provider, _ = make(ledger, fake_redis, accepted(), FakeLimiter(timeout=True))
    trade_nos = new_orders(ledger, 3)
    report = submitter.run(trade_nos, budget=10)
    assert report.leftover == trade_nos
    assert provider.posts == []
    assert {state(ledger, t) for t in trade_nos} == {State.QUEUED}


def test_pause_during_the_rate_limit_wait_sends_nothing(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    switch = PauseSwitch(fake_redis, prefix="t")
    limiter = FakeLimiter(wait=True, on_acquire=lambda: switch.pause("operator"))
    submitter, provider, _ = make(ledger, fake_redis, accepted(), limiter)
    (t,) = new_orders(ledger)
    assert submitter.run([t], budget=10).paused
    assert limiter.acquired == 1
    assert provider.posts == []
    assert state(ledger, t) is State.QUEUED  # the claim was given back


def test_a_slot_taken_with_the_claim_needs_no_second_trip(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    limiter = FakeLimiter()
    submitter, provider, _ = make(ledger, fake_redis, accepted(), limiter)
    trade_nos = new_orders(ledger, 3)
    assert submitter.run(trade_nos, budget=10).done == 3
    assert limiter.acquired == 0  # never had to wait
    assert [t for t, _ in provider.posts] == trade_nos


def test_the_limiter_script_lost_by_a_redis_restart_is_reloaded(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    # A real limiter on the same server: its script is flushed too.
    limiter = RateLimiter(fake_redis, "submit", Rate(1000), prefix="t")
    submitter, provider, _ = make(ledger, fake_redis, accepted(), limiter)
    trade_nos = new_orders(ledger, 2)
    fake_redis.script_flush()
    assert submitter.run(trade_nos, budget=10).done == 2
    assert [t for t, _ in provider.posts] == trade_nos  # each claimed and posted once
    assert {state(ledger, t) for t in trade_nos} == {State.PROCESSING}
    attempts = [order.attempts for order in ledger.get_many(trade_nos) if order]
    assert attempts == [1, 1]


def commits(ledger: Ledger) -> list[list[tuple[str, str]]]:
    """The submit path's changes, grouped by the transaction that made them, in order."""
    with ledger.pool.connection() as conn:
        rows = conn.execute(
            "SELECT xmin::text::bigint, trade_no, to_state FROM order_events "
            "WHERE source = 'submit' ORDER BY id"
        ).fetchall()
    by_transaction: dict[int, list[tuple[str, str]]] = {}
    for xid, trade_no, to_state in rows:
        by_transaction.setdefault(xid, []).append((trade_no, to_state))
    return [sorted(changes) for changes in by_transaction.values()]


def test_claims_grow_in_groups_each_committed_with_the_answers_before(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitter, provider, _ = make(ledger, fake_redis, accepted())
    trade_nos = new_orders(ledger, 7)
    assert submitter.run(trade_nos, budget=10).done == 7
    assert [t for t, _ in provider.posts] == trade_nos
    assert {state(ledger, t) for t in trade_nos} == {State.PROCESSING}
    one, two, three, *four = trade_nos
    # Four commits for seven payouts: groups of 1, 2 and 4 while slots come free at once,
    # each group's claims with the answers to the group before, each answer after its POST.
    assert commits(ledger) == [
        [(one, "SUBMITTING")],
        sorted([(one, "PROCESSING"), (two, "SUBMITTING"), (three, "SUBMITTING")]),
        sorted([(two, "PROCESSING"), (three, "PROCESSING")] + [(t, "SUBMITTING") for t in four]),
        sorted((t, "PROCESSING") for t in four),
    ]


def test_the_group_size_carries_over_to_the_next_chunk(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    limiter = SlotsFor(7)
    submitter, _, _ = make(ledger, fake_redis, accepted(), limiter)  # type: ignore[arg-type]
    assert submitter.run(new_orders(ledger, 7), budget=10).done == 7  # groups of 1, 2, 4
    limiter.free = 3
    later = new_orders(ledger, 3, market="JP")
    assert submitter.run(later, budget=10).done == 3
    claims = [sum(1 for _, to in changes if to == "SUBMITTING") for changes in commits(ledger)]
    assert claims[-2:] == [3, 0]  # the next chunk's three in one group, then their answers
    # A chunk whose orders had to wait for slots starts the next one at one again.
    limiter.free = 1
    assert submitter.run(new_orders(ledger, 3, market="KH"), budget=10).leftover
    limiter.free = 16
    assert submitter.run(new_orders(ledger, 2, market="AR"), budget=10).done == 2
    claims = [sum(1 for _, to in changes if to == "SUBMITTING") for changes in commits(ledger)]
    assert claims[-3:] == [1, 1, 0]


def test_groups_stop_growing_at_their_limit(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, _, _ = make(ledger, fake_redis, accepted())
    trade_nos = new_orders(ledger, 3 * SUBMIT_GROUP)
    assert submitter.run(trade_nos, budget=10).done == 3 * SUBMIT_GROUP
    claims = [sum(1 for _, to in changes if to == "SUBMITTING") for changes in commits(ledger)]
    assert max(claims) == SUBMIT_GROUP
    assert sum(claims) == 3 * SUBMIT_GROUP


def test_orders_waiting_for_their_slot_are_claimed_one_at_a_time(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitter, provider, _ = make(ledger, fake_redis, accepted(), FakeLimiter(wait=True))
    trade_nos = new_orders(ledger, 5)
    assert submitter.run(trade_nos, budget=10).done == 5
    assert [t for t, _ in provider.posts] == trade_nos
    # A killed worker leaves at most the order it was sending claimed and unsent.
    claims = [sum(1 for _, to in changes if to == "SUBMITTING") for changes in commits(ledger)]
    assert claims == [1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("slow", [False, True])
def test_a_pause_within_a_group_is_seen_once_the_last_look_is_old(
    ledger: Ledger, fake_redis: redis.Redis, slow: bool
) -> None:
    switch = PauseSwitch(fake_redis, prefix="t")
    trade_nos = new_orders(ledger, 5)
    one, two, three, four, five = trade_nos

    def pause_at_the_second(trade_no: str) -> PayoutResult:
        if trade_no == two:
            switch.pause("operator")
            if slow:  # a provider taking longer than the look's age allows
                time.sleep(PAUSE_LOOK_EVERY * 1.5)
        return accepted()(trade_no)

    submitter, provider, _ = make(ledger, fake_redis, pause_at_the_second)
    assert submitter.run(trade_nos, budget=10).paused
    # Groups of 1, then 2 (two, three), then 4 (four, five): the switch is looked at before
    # a claim and again before a POST when the last look is older than PAUSE_LOOK_EVERY,
    # and with each group's slots. Quick POSTs finish their group; a slow one stops it.
    sent = [one, two] if slow else [one, two, three]
    assert [t for t, _ in provider.posts] == sent
    assert [state(ledger, t) for t in trade_nos] == [State.PROCESSING] * len(sent) + [
        State.QUEUED
    ] * (5 - len(sent))
    if slow:  # claimed with the second, never sent: given back
        assert ledger_reads.history(ledger, three)[-1][1] == "QUEUED submit paused"
    # The last group: with a look older than PAUSE_LOOK_EVERY, the switch is read before
    # its claim (never claimed); with a recent one, with its slots, right after the claim
    # (claimed and given back, never sent).
    last = ["QUEUED producer"] if slow else [
        "QUEUED producer", "SUBMITTING submit", "QUEUED submit paused"
    ]  # fmt: skip
    for trade_no in (four, five):
        assert [h for _, h in ledger_reads.history(ledger, trade_no)] == last


class SlotsFor:
    """A limiter with ``free`` slots at once, then none within any budget."""

    def __init__(self, free: int) -> None:
        self.free = free

    def queue_take(self, pipe: Pipeline, count: int) -> None:
        pipe.echo(str(count))

    def slots(self, reply: object) -> Slots:
        taken = min(self.free, int(str(reply)))
        self.free -= taken
        return Slots(deque([time.monotonic()] * taken))

    def acquire(self, timeout: float | None = None) -> float:
        raise RateLimitTimeout("budget")

    def penalize(self, seconds: float) -> None:
        raise AssertionError("no 429 here")


def test_a_budget_spent_within_a_group_leaves_its_unsent_orders_queued(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitter, provider, _ = make(ledger, fake_redis, accepted(), SlotsFor(2))  # type: ignore[arg-type]
    trade_nos = new_orders(ledger, 5)
    report = submitter.run(trade_nos, budget=10)
    assert [t for t, _ in provider.posts] == trade_nos[:2]
    assert report.done == 2
    assert report.leftover == trade_nos[2:]  # the group's unsent order, then the rest
    assert [state(ledger, t) for t in trade_nos] == [State.PROCESSING] * 2 + [State.QUEUED] * 3


def test_an_order_twice_in_one_chunk_is_sent_once(ledger: Ledger, fake_redis: redis.Redis) -> None:
    submitter, provider, _ = make(ledger, fake_redis, accepted())
    one, two = new_orders(ledger, 2)
    assert submitter.run([one, two, one, two], budget=10).done == 2
    assert [t for t, _ in provider.posts] == [one, two]


def test_the_last_answer_is_applied_when_a_pause_stops_the_chunk(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    switch = PauseSwitch(fake_redis, prefix="t")

    def accept_then_pause(trade_no: str) -> PayoutResult:
        switch.pause("operator")
        return accepted()(trade_no)

    submitter, provider, _ = make(ledger, fake_redis, accept_then_pause)
    first, *rest = new_orders(ledger, 3)
    assert submitter.run([first, *rest], budget=10).paused
    assert [t for t, _ in provider.posts] == [first]
    assert state(ledger, first) is State.PROCESSING
    assert {state(ledger, t) for t in rest} == {State.QUEUED}


def test_the_last_answer_is_applied_when_the_chunk_fails(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    calls = 0

    def accept_then_break(trade_no: str) -> PayoutResult:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug after the first POST")
        return accepted()(trade_no)

    submitter, _, _ = make(ledger, fake_redis, accept_then_break)
    first, second = new_orders(ledger, 2)
    with pytest.raises(RuntimeError):
        submitter.run([first, second], budget=10)
    assert state(ledger, first) is State.PROCESSING  # its answer was not lost
    assert state(ledger, second) is State.UNKNOWN  # maybe sent: the provider is asked


def test_metrics_are_written_once_per_task(ledger: Ledger, fake_redis: redis.Redis) -> None:
    metrics = Metrics(fake_redis, prefix="t", flush_every=3600)
    submitter, _, _ = make(ledger, fake_redis, accepted(), metrics=metrics)
    submitter.run(new_orders(ledger, 3), budget=10)
    recorded = metrics.snapshot()
    assert recorded["resp|submit|0015"] == "3"
    assert recorded["waits|submit"] == "3"
    assert sum(int(v) for k, v in recorded.items() if k.startswith("lat|")) == 3


# --- one provider account per market --------------------------------------------------


@dataclass
class Accounts:
    """The ID and AR markets on two provider accounts, as the runtime builds them."""

    submitters: MarketSubmitters
    providers: dict[str, FakeProvider]
    limiters: dict[str, FakeLimiter]


def two_accounts(
    ledger: Ledger,
    fake_redis: redis.Redis,
    *,
    ar_answer: Callable[[str], PayoutResult] | None = None,
    id_limiter: FakeLimiter | None = None,
) -> Accounts:
    limiters = {"ID": id_limiter or FakeLimiter(wait=True), "AR": FakeLimiter(wait=True)}
    answers = {"ID": accepted(), "AR": ar_answer or accepted()}
    by_market: dict[str, Submitter] = {}
    providers: dict[str, FakeProvider] = {}
    for market in ("ID", "AR"):
        by_market[market], providers[market], _ = make(
            ledger, fake_redis, answers[market], limiters[market], account=market
        )
    return Accounts(MarketSubmitters(ledger, by_market.__getitem__), providers, limiters)


def interleaved(ledger: Ledger, n: int) -> tuple[list[str], list[str], list[str]]:
    """``n`` ID and ``n`` AR orders, and one chunk holding them alternately."""
    ids, ars = new_orders(ledger, n, "ID"), new_orders(ledger, n, "AR")
    return ids, ars, [t for pair in zip(ids, ars, strict=True) for t in pair]


def test_each_order_is_sent_and_limited_by_its_market_account(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    accounts = two_accounts(ledger, fake_redis)
    ids, ars, chunk = interleaved(ledger, 3)
    report = accounts.submitters.run([*chunk, "0" * 32], budget=10)  # one order unknown
    assert report.done == 6
    assert [t for t, _ in accounts.providers["ID"].posts] == ids
    assert [t for t, _ in accounts.providers["AR"].posts] == ars
    assert (accounts.limiters["ID"].acquired, accounts.limiters["AR"].acquired) == (3, 3)


def test_systemic_rejection_pauses_only_that_account(
    ledger: Ledger, fake_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    accounts = two_accounts(
        ledger, fake_redis, ar_answer=raising(ConfigurationRejected("4001", "sign error"))
    )
    ids, ars, chunk = interleaved(ledger, 3)
    report = accounts.submitters.run(chunk, budget=10)
    assert report.paused
    assert len(accounts.providers["AR"].posts) == 1  # the first rejection stops AR
    assert [t for t, _ in accounts.providers["ID"].posts] == ids  # ID goes on
    assert {state(ledger, t) for t in ars} == {State.QUEUED}
    assert {state(ledger, t) for t in ids} == {State.PROCESSING}
    reason = PauseSwitch(fake_redis, prefix="t", account="AR").reason()
    assert reason is not None and "4001" in reason
    assert PauseSwitch(fake_redis, prefix="t", account="ID").reason() is None
    assert PauseSwitch(fake_redis, prefix="t").paused() == {"AR": reason}
    (loud,) = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert "provider account AR" in loud.getMessage()


def test_a_paused_account_claims_nothing_and_others_go_on(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    accounts = two_accounts(ledger, fake_redis)
    ids, ars, chunk = interleaved(ledger, 2)
    PauseSwitch(fake_redis, prefix="t", account="AR").pause("bad signature")
    report = accounts.submitters.run(chunk, budget=10)
    assert report.paused and report.done == 2
    assert [t for t, _ in accounts.providers["ID"].posts] == ids
    assert accounts.providers["AR"].posts == []
    # Not even claimed and given back: its history is its creation alone.
    assert all(len(ledger_reads.history(ledger, t)) == 1 for t in ars)
    assert {state(ledger, t) for t in ars} == {State.QUEUED}


def test_the_cluster_wide_pause_stops_every_account(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    accounts = two_accounts(ledger, fake_redis)
    _, _, chunk = interleaved(ledger, 2)
    cluster = PauseSwitch(fake_redis, prefix="t")
    cluster.pause("operator")
    assert accounts.submitters.run(chunk, budget=10).paused
    assert accounts.providers["ID"].posts == accounts.providers["AR"].posts == []
    cluster.resume()
    assert accounts.submitters.run(chunk, budget=10).done == 4


def test_an_account_out_of_rate_does_not_hold_up_another(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    accounts = two_accounts(ledger, fake_redis, id_limiter=FakeLimiter(timeout=True))
    ids, ars, chunk = interleaved(ledger, 2)
    report = accounts.submitters.run(chunk, budget=10)
    assert report.leftover == ids  # handed on, still QUEUED
    assert [t for t, _ in accounts.providers["AR"].posts] == ars


# --- what cancel may take back (issue 21 item 4) ----------------------------------------


def test_a_claim_given_back_before_its_post_leaves_the_order_cancellable(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    switch = PauseSwitch(fake_redis, prefix="t")
    limiter = FakeLimiter(wait=True, on_acquire=lambda: switch.pause("operator"))
    submitter, provider, _ = make(ledger, fake_redis, accepted(), limiter)
    (t,) = new_orders(ledger)
    assert submitter.run([t], budget=10).paused
    assert provider.posts == [] and state(ledger, t) is State.QUEUED
    (cancelled,) = ledger.cancel_unposted([t], note="cancelled")
    assert cancelled.moved


def test_an_order_whose_post_was_started_is_never_cancelled(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitter, _, _ = make(ledger, fake_redis, raising(NotSent("connection reset")))
    (t,) = new_orders(ledger)
    submitter.run([t], budget=10)
    assert state(ledger, t) is State.QUEUED
    (kept,) = ledger.cancel_unposted([t], note="cancelled")
    assert (kept.outcome, kept.previous) == ("posted", State.QUEUED)
    assert state(ledger, t) is State.QUEUED


# --- a pause kept in PostgreSQL (issue 21 item 8) ---------------------------------------


def test_a_pause_held_across_a_redis_wipe_still_stops_every_post(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    store = PauseStore(ledger.pool)
    provider = FakeProvider(accepted())
    submitter = Submitter(
        ledger,
        provider,
        FakeLimiter(),
        PauseSwitch(fake_redis, prefix="t", account="ID", store=store),
        claim_lease=60.0,
        recover=lambda trade_no: None,
        metrics=None,
        late_slot=math.inf,
    )
    trade_nos = new_orders(ledger, 3)
    cluster = PauseSwitch(fake_redis, prefix="t", store=store)
    cluster.pause("incident 42", who="alice")
    fake_redis.flushall()  # Redis wiped (or restarted empty) while paused
    assert submitter.run(trade_nos, budget=10).paused
    assert provider.posts == []
    assert {state(ledger, t) for t in trade_nos} == {State.QUEUED}
    cluster.resume(who="alice")
    assert submitter.run(trade_nos, budget=10).done == 3
    assert len(provider.posts) == 3


# --- the circuit breaker (issue 21 item 9) ----------------------------------------------


def breaker_accounts(
    ledger: Ledger,
    fake_redis: redis.Redis,
    ar_answer: Callable[[str], PayoutResult],
    *,
    rejections: int = 3,
    systemic_codes: frozenset[str] = DEFAULT_SYSTEMIC_CODES,
) -> tuple[MarketSubmitters, dict[str, FakeProvider]]:
    """ID and AR, each with its breaker and its pause kept in PostgreSQL; AR answers
    ``ar_answer``."""
    store = PauseStore(ledger.pool)
    by_market: dict[str, Submitter] = {}
    providers: dict[str, FakeProvider] = {}
    for market, answer in (("ID", accepted()), ("AR", ar_answer)):
        providers[market] = FakeProvider(answer)
        by_market[market] = Submitter(
            ledger,
            providers[market],
            FakeLimiter(),
            PauseSwitch(fake_redis, prefix="t", account=market, store=store),
            claim_lease=60.0,
            recover=lambda trade_no: None,
            breaker=Breaker(fake_redis, "t", market, rejections=rejections, window=30.0),
            systemic_codes=systemic_codes,
            late_slot=math.inf,
        )
    return MarketSubmitters(ledger, by_market.__getitem__), providers


def test_first_attempts_refused_one_after_another_pause_the_account_none_failed(
    ledger: Ledger, fake_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    refused = raising(Refused("submit: refused (code 9001: denied)", code="9001"))
    submitters, providers = breaker_accounts(ledger, fake_redis, refused)
    ids, ars = new_orders(ledger, 3, "ID"), new_orders(ledger, 5, "AR")
    report = submitters.run([*ars, *ids], budget=10)
    assert report.paused
    assert len(providers["AR"].posts) == 3  # the third refusal trips the breaker
    assert {state(ledger, t) for t in ars} == {State.QUEUED}  # never FAILED
    assert [t for t, _ in providers["ID"].posts] == ids  # another account goes on
    assert {state(ledger, t) for t in ids} == {State.PROCESSING}
    # The first two are sent again after the breaker's window (then paused, they wait).
    assert sorted(t for t, _ in report.retry) == sorted(ars[:2])
    assert all(delay >= 30.0 for _, delay in report.retry)
    (record,) = PauseStore(ledger.pool).active().values()
    assert (record.scope, record.who) == ("AR", "circuit-breaker")
    assert "3 first attempts refused within 30 s (codes 9001 x3)" in record.reason
    fake_redis.flushall()  # the pause is PostgreSQL's: a wipe does not lift it
    assert PauseSwitch(fake_redis, "t", account="AR", store=PauseStore(ledger.pool)).reason()
    (loud,) = [r for r in caplog.records if r.levelname == "ERROR" and "PAUSING" in r.message]
    assert "provider account AR" in loud.getMessage() and "9001 x3" in loud.getMessage()


def test_a_documented_final_refusal_is_still_failed(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitters, _ = breaker_accounts(ledger, fake_redis, raising(Rejected("8000", "bad account")))
    ars = new_orders(ledger, 2, "AR")
    report = submitters.run(ars, budget=10)
    assert not report.paused
    assert {state(ledger, t) for t in ars} == {State.FAILED}
    assert PauseStore(ledger.pool).active() == {}


def test_the_breaker_counts_documented_refusals_too_and_keeps_the_tripping_one(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    submitters, _ = breaker_accounts(ledger, fake_redis, raising(Rejected("8000", "denied")))
    ars = new_orders(ledger, 4, "AR")
    assert submitters.run(ars, budget=10).paused
    assert [state(ledger, t) for t in ars] == [State.FAILED] * 2 + [State.QUEUED] * 2


def test_later_attempts_do_not_count_for_the_breaker(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    refused = raising(Refused("submit: refused (code 9001: denied)", code="9001"))
    submitters, _ = breaker_accounts(ledger, fake_redis, refused)
    ars = new_orders(ledger, 3, "AR")
    for t in ars:  # each one's first POST was certainly not sent
        ledger.claim(t)
        ledger.give_back([t], why="not sent: NotSent", posted=True)
    assert not submitters.run(ars, budget=10).paused
    assert {state(ledger, t) for t in ars} == {State.UNKNOWN}  # queried, as before


def test_systemic_codes_are_a_setting(ledger: Ledger, fake_redis: redis.Redis) -> None:
    refused = raising(Refused("submit: refused (code 9100: ip not allowed)", code="9100"))
    submitters, _ = breaker_accounts(
        ledger, fake_redis, refused, systemic_codes=frozenset({"9100"})
    )
    ars = new_orders(ledger, 2, "AR")
    assert submitters.run(ars, budget=10).paused
    (record,) = PauseStore(ledger.pool).active().values()
    assert (record.scope, record.who) == ("AR", "systemic-code")
    assert "code 9100" in record.reason


def test_a_code_taken_off_the_systemic_list_no_longer_pauses_at_once(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    answer = raising(ConfigurationRejected("4001", "sign error"))
    submitters, _ = breaker_accounts(ledger, fake_redis, answer, systemic_codes=frozenset())
    ars = new_orders(ledger, 2, "AR")
    report = submitters.run(ars, budget=10)
    assert not report.paused and len(report.retry) == 2
    assert {state(ledger, t) for t in ars} == {State.QUEUED}


def test_resume_starts_the_breaker_count_afresh(ledger: Ledger, fake_redis: redis.Redis) -> None:
    refused = raising(Refused("submit: refused (code 9001: denied)", code="9001"))
    submitters, _ = breaker_accounts(ledger, fake_redis, refused)
    assert submitters.run(new_orders(ledger, 3, "AR"), budget=10).paused
    PauseSwitch(fake_redis, "t", store=PauseStore(ledger.pool)).resume(who="alice")
    assert fake_redis.exists("t:breaker:AR") == 0
    report = submitters.run(new_orders(ledger, 1, "AR", batch="b2"), budget=10)
    assert not report.paused and len(report.retry) == 1


# --- many POSTs in flight (issue 23) --------------------------------------------------


class SlowProvider:
    """Answers after ``seconds``, counting the POSTs in flight at once; the first
    ``meet`` POSTs each wait (at most 5 s) until that many are in flight together."""

    def __init__(self, seconds: float, meet: int = 0) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.posts: list[tuple[float, str]] = []
        self.meeting = threading.Barrier(meet) if meet else None

    def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.posts.append((time.monotonic(), trade_no))
            first = len(self.posts) <= (self.meeting.parties if self.meeting else 0)
        try:
            if first and self.meeting is not None:
                self.meeting.wait(timeout=5)  # BrokenBarrierError: never that many at once
            time.sleep(self.seconds)
            return accepted()(trade_no)
        finally:
            with self.lock:
                self.now -= 1


class Claims:
    """A ClaimHolder that records what it was told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: list[str] = []
        self.dropped: list[str] = []

    def hold(self, trade_nos: Sequence[str]) -> None:
        with self.lock:
            self.held += trade_nos

    def drop(self, trade_nos: Sequence[str]) -> None:
        with self.lock:
            self.dropped += trade_nos

    def alive(self, trade_no: str) -> bool:
        return True


def concurrent(
    ledger: Ledger,
    fake_redis: redis.Redis,
    client: object,
    concurrency: int,
    limiter: object | None = None,
    heartbeat: Claims | None = None,
) -> Submitter:
    return Submitter(
        ledger,
        client,  # type: ignore[arg-type]
        limiter or FakeLimiter(),  # type: ignore[arg-type]
        PauseSwitch(fake_redis, prefix="t"),
        claim_lease=60.0,
        recover=lambda trade_no: None,
        concurrency=concurrency,
        heartbeat=heartbeat,
    )


def test_a_chunk_keeps_its_concurrency_of_posts_in_flight_and_never_more(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    provider = SlowProvider(0.02, meet=8)  # the first eight meet: eight at once
    trade_nos = new_orders(ledger, 60)
    report = concurrent(ledger, fake_redis, provider, 8).run(trade_nos, budget=30)
    assert report.done == 60 and not report.leftover
    assert provider.most == 8
    assert sorted(t for _, t in provider.posts) == sorted(trade_nos)  # each POSTed once
    assert {state(ledger, t) for t in trade_nos} == {State.PROCESSING}


def test_posts_in_flight_never_outrun_the_rate_limit(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    # A real limiter at 100/s, POSTs of 50 ms, 16 senders: the limit paces them.
    limiter = RateLimiter(fake_redis, "submit", Rate(100), prefix="t")
    provider = SlowProvider(0.05)
    trade_nos = new_orders(ledger, 110)
    report = concurrent(ledger, fake_redis, provider, 16, limiter).run(trade_nos, budget=30)
    assert report.done == 110
    starts = sorted(at for at, _ in provider.posts)
    busiest = max(sum(1 for at in starts if first <= at < first + 1.0) for first in starts)
    assert busiest <= 100
    assert provider.most > 1  # slow POSTs overlap


def test_a_pause_mid_chunk_stops_new_posts(ledger: Ledger, fake_redis: redis.Redis) -> None:
    switch = PauseSwitch(fake_redis, prefix="t")
    trade_nos = new_orders(ledger, 40)
    paused_at: list[float] = []

    class PausingProvider(SlowProvider):
        def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult:
            if trade_no == trade_nos[5] and not paused_at:
                switch.pause("operator")
                paused_at.append(time.monotonic())
            return super().submit(fields, trade_no)

    # POSTs slower than PAUSE_LOOK_EVERY: a sender starting after one looks again.
    provider = PausingProvider(PAUSE_LOOK_EVERY * 1.2)
    report = concurrent(ledger, fake_redis, provider, 4).run(trade_nos, budget=30)
    assert report.paused
    after = [t for at, t in provider.posts if at > paused_at[0]]
    # Only senders whose last look was fresh when the pause came: at most one each.
    assert len(after) <= 4
    posted = {t for _, t in provider.posts}
    assert len(posted) < 40
    states = {t: state(ledger, t) for t in trade_nos}
    assert {states[t] for t in posted} == {State.PROCESSING}
    assert {states[t] for t in trade_nos if t not in posted} == {State.QUEUED}  # none SUBMITTING


def test_a_senders_error_leaves_every_claim_with_a_state_and_is_raised(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    trade_nos = new_orders(ledger, 20)

    class BrokenOnce(SlowProvider):
        def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult:
            if trade_no == trade_nos[3]:
                raise RuntimeError("a bug in the middle of a POST")
            return super().submit(fields, trade_no)

    claims = Claims()
    provider = BrokenOnce(0.01)
    submitter = concurrent(ledger, fake_redis, provider, 4, heartbeat=claims)
    with pytest.raises(RuntimeError):
        submitter.run(trade_nos, budget=30)
    states = {t: state(ledger, t) for t in trade_nos}
    assert states[trade_nos[3]] is State.UNKNOWN  # maybe sent: asked about
    posted = {t for _, t in provider.posts}
    assert {states[t] for t in posted} == {State.PROCESSING}  # answers applied
    others = {states[t] for t in trade_nos if t not in posted and t != trade_nos[3]}
    assert others <= {State.QUEUED}  # given back or never claimed: none SUBMITTING
    assert sorted(claims.held) == sorted(claims.dropped)  # every claim let go, once


def test_an_error_before_the_post_gives_the_claim_back(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    provider = SlowProvider(0.0)
    submitter = concurrent(ledger, fake_redis, provider, 2)

    def redis_gone() -> bool:
        raise redis.ConnectionError("Redis went away")

    submitter.watch.paused = redis_gone  # type: ignore[method-assign]
    (t,) = new_orders(ledger)
    with pytest.raises(redis.ConnectionError):
        submitter.run([t], budget=30)
    assert provider.posts == []
    assert state(ledger, t) is State.QUEUED
    (cancelled,) = ledger.cancel_unposted([t], note="cancelled")  # never POSTed
    assert cancelled.moved


def test_a_post_past_its_deadline_is_queried(ledger: Ledger, fake_redis: redis.Redis) -> None:
    # The client ends a POST at its total deadline as OutcomeUnknown (test_vexora): the
    # order is UNKNOWN and asked about, the others go on.
    trade_nos = new_orders(ledger, 6)

    def hang_one(trade_no: str) -> PayoutResult:
        if trade_no == trade_nos[2]:
            time.sleep(0.05)
            raise OutcomeUnknown("submit: outcome unknown (read timeout after sending)")
        return accepted()(trade_no)

    provider = FakeProvider(hang_one)
    report = concurrent(ledger, fake_redis, provider, 4).run(trade_nos, budget=30)
    assert report.query == [trade_nos[2]] and report.done == 5
    assert state(ledger, trade_nos[2]) is State.UNKNOWN


def test_the_claim_holder_is_told_of_every_claim_and_its_end(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    claims = Claims()
    switch = PauseSwitch(fake_redis, prefix="t")
    trade_nos = new_orders(ledger, 12)

    def pause_at_the_sixth(trade_no: str) -> PayoutResult:
        if trade_no == trade_nos[5]:
            switch.pause("operator")
            time.sleep(PAUSE_LOOK_EVERY * 1.5)
        return accepted()(trade_no)

    submitter = concurrent(
        ledger, fake_redis, FakeProvider(pause_at_the_sixth), 2, heartbeat=claims
    )
    assert submitter.run(trade_nos, budget=30).paused
    claimed = [t for t in trade_nos if len(ledger_reads.history(ledger, t)) > 1]
    assert sorted(claims.held) == sorted(claimed)
    assert sorted(claims.dropped) == sorted(claimed)  # each once: outcome or given back


def test_no_post_starts_after_the_budget(ledger: Ledger, fake_redis: redis.Redis) -> None:
    provider = SlowProvider(0.1)
    trade_nos = new_orders(ledger, 30)
    report = concurrent(ledger, fake_redis, provider, 2).run(trade_nos, budget=0.25)
    posted = {t for _, t in provider.posts}
    assert 0 < len(posted) < 30
    assert report.done == len(posted)
    assert sorted(report.leftover) == sorted(set(trade_nos) - posted)  # handed on, QUEUED
    assert {state(ledger, t) for t in report.leftover} == {State.QUEUED}


def test_a_sender_late_for_its_slot_takes_a_new_one(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    # A slot used late bunches up with the next ones used on time: the sender that
    # comes to its slot more than LATE_SLOT after its time takes a new one first.
    limiter = FakeLimiter()
    provider = FakeProvider(accepted())
    late = Submitter(
        ledger,
        provider,
        limiter,
        PauseSwitch(fake_redis, prefix="t"),
        claim_lease=60.0,
        recover=lambda trade_no: None,
        late_slot=0.0,  # every slot is late by the time its sender runs
    )
    trade_nos = new_orders(ledger, 3)
    assert late.run(trade_nos, budget=10).done == 3
    assert limiter.acquired == 3  # a new slot each
    assert [t for t, _ in provider.posts] == trade_nos


def test_an_error_of_the_coordinator_gives_back_the_claims_not_handed_on(
    ledger: Ledger, fake_redis: redis.Redis
) -> None:
    calls = 0

    def redis_gone_at_the_second() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise redis.ConnectionError("Redis went away")

    claims = Claims()
    limiter = FakeLimiter(wait=True, on_acquire=redis_gone_at_the_second)
    provider = FakeProvider(accepted())
    submitter = concurrent(ledger, fake_redis, provider, 4, limiter, heartbeat=claims)
    first, second, third = new_orders(ledger, 3)
    with pytest.raises(redis.ConnectionError):
        submitter.run([first, second, third], budget=10)
    assert [t for t, _ in provider.posts] == [first]
    assert [state(ledger, t) for t in (first, second, third)] == [
        State.PROCESSING,  # its answer applied
        State.QUEUED,  # claimed, its slot never came: given back
        State.QUEUED,  # never claimed
    ]
    assert sorted(claims.held) == sorted(claims.dropped) == sorted([first, second])


def test_an_accepted_claim_stays_held_until_its_answer_is_written(
    ledger: Ledger, fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer waits for the next claims (or the chunk's end) to be written: until
    # then the order is SUBMITTING, and its lease must not run out meanwhile.
    heartbeat = ClaimHeartbeat(ledger, ttl=180)  # no renewal needed in this test
    held_when_written: list[tuple[list[str], list[str]]] = []
    claim_many = ledger.claim_many

    def recording(group: Sequence[str], *, answers: Sequence[Any] = ()) -> Any:
        if answers:
            held_when_written.append(([t for t, _ in answers], heartbeat.held()))
        return claim_many(group, answers=answers)

    monkeypatch.setattr(ledger, "claim_many", recording)
    submitter, _, _ = make(ledger, fake_redis, accepted(), heartbeat=heartbeat)
    (t,) = new_orders(ledger)
    assert submitter.run([t], budget=10).done == 1
    assert held_when_written == [([t], [t])]
    assert heartbeat.held() == [] and state(ledger, t) is State.PROCESSING
    heartbeat.stop()
