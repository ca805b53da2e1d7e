"""Reconciliation on fakeredis with fake provider clients and fake publishers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import redis

from schemas import Payout
from worker.config import Rate, Settings
from worker.details import Disbursement, parse_disbursement
from worker.exceptions import AuthenticationFailed, NotFound, OutcomeUnknown, RateLimited
from worker.ledger import Ledger
from worker.ratelimit import RateLimitTimeout
from worker.reconcile import PAGE, PassReport, Reconciler
from worker.retry import MAX_NO_RECORD_RESUBMITS, NO_RECORD_GRACE
from worker.states import State
from worker.token import TokenUnavailable
from worker.vexora import PayoutResult, payout_result

DAY = 86400.0

Answer = Any  # a result, an exception to raise, or a callable returning either


def _answer(answer: Answer) -> Any:
    if callable(answer) and not isinstance(answer, type):
        answer = answer()
    if isinstance(answer, BaseException):
        raise answer
    return answer


class FakeDetails:
    """details(platform id) -> the answer set for that id (NotFound when none is)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: list[str] = []
        self.markets: list[str] = []  # whose account's client each query was asked of

    def client_of(self, market: str) -> FakeVexora:
        self.markets.append(market)
        return self

    def status(self, platform_trade_no: str, status: str) -> None:
        self.answers[platform_trade_no] = parse_disbursement(
            {"transaction_id": platform_trade_no, "status": status}
        )

    def details(
        self,
        transaction_id: str,
        page: int | None = None,
        *,
        throttle: Callable[[], object] = lambda: None,
    ) -> Disbursement:
        throttle()  # the real client: before every request it sends
        self.calls.append(transaction_id)
        return _answer(self.answers.get(transaction_id, NotFound("details: not found")))  # type: ignore[no-any-return]


class FakeVexora:
    """query(tradeNo) -> the answer set for that tradeNo (NotFound when none is)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: list[str] = []
        self.markets: list[str] = []  # whose account's client each query was asked of

    def client_of(self, market: str) -> FakeVexora:
        self.markets.append(market)
        return self

    def status(self, trade_no: str, status: str, platform_trade_no: str = "ptn-q") -> None:
        data = {"tradeNo": trade_no, "platFormTradeNo": platform_trade_no, "status": status}
        self.answers[trade_no] = payout_result(data, trade_no, "query")

    def query(self, trade_no: str) -> PayoutResult:
        self.calls.append(trade_no)
        return _answer(self.answers.get(trade_no, NotFound("query: order not found")))  # type: ignore[no-any-return]


class FakeLimiter:
    def __init__(self, slots: int | None = None) -> None:
        self.rate = Rate(100)
        self.slots = slots  # None: unlimited; else RateLimitTimeout once these are taken
        self.taken = 0
        self.penalties: list[float] = []

    def acquire(self, timeout: float | None = None) -> float:
        if self.slots is not None and self.taken >= self.slots:
            raise RateLimitTimeout("no slot within the budget")
        self.taken += 1
        return 0.0

    def penalize(self, seconds: float) -> None:
        self.penalties.append(seconds)


@dataclass
class World:
    ledger: Ledger
    details: FakeDetails
    vexora: FakeVexora
    limiter: FakeLimiter
    reconciler: Reconciler
    lookups: list[list[str]] = field(default_factory=list)
    submissions: list[list[str]] = field(default_factory=list)
    queue_length: list[Any] = field(default_factory=lambda: [0])  # a length or an exception

    @property
    def redis(self) -> redis.Redis:
        return self.ledger.redis

    def published_lookups(self) -> list[str]:
        return [t for chunk in self.lookups for t in chunk]

    def published_submissions(self) -> list[str]:
        return [t for chunk in self.submissions for t in chunk]

    def next_pass(self) -> PassReport:
        """A pass as the next beat tick would run it (the gate of the last one expired)."""
        self.redis.delete("t:reconcile:gate")
        return self.reconciler.run_pass()

    def state(self, trade_no: str) -> State:
        order = self.ledger.get(trade_no)
        assert order is not None
        return order.state


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "key_prefix": "t",
        "reconcile_every": 10.0,
        "reconcile_after": 60.0,
        "review_after": DAY,
        "sweep_after": 300.0,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
def make_world(fake_redis: redis.Redis) -> Callable[..., World]:
    def make(limiter: FakeLimiter | None = None, **overrides: Any) -> World:
        ledger = Ledger(fake_redis, prefix="t")
        details, vexora, limiter = FakeDetails(), FakeVexora(), limiter or FakeLimiter()
        world: World
        reconciler = Reconciler(
            ledger,
            vexora.client_of,  # type: ignore[arg-type]
            details,  # type: ignore[arg-type]
            limiter,  # type: ignore[arg-type]
            settings(**overrides),
            publish_lookups=lambda ts, countdown=None: world.lookups.append(list(ts)),
            publish_submissions=lambda ts: world.submissions.append(list(ts)),
            submit_queue_length=lambda: _answer(world.queue_length[0]),
        )
        world = World(ledger, details, vexora, limiter, reconciler)
        return world

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


# --- building orders -------------------------------------------------------------------

_count = [0]


def new_orders(world: World, n: int = 1, batch: str = "b1") -> list[str]:
    payouts = []
    for _ in range(n):
        _count[0] += 1
        fields = {"amount": "100000", "bankAccountNo": f"{_count[0]:013d}", "bankCode": "0002"}
        payouts.append(Payout("ID", "IDR", Decimal(100000), None, fields))
    return [t for t, _ in world.ledger.create_orders(payouts, batch_id=batch, market="ID")]


def order_in(world: World, state: State, *, ptn: str | None = None, age: float = 120.0) -> str:
    """One order moved to ``state`` along the real path, entered ``age`` seconds ago."""
    (trade_no,) = new_orders(world)
    ledger = world.ledger
    if state is not State.QUEUED:
        assert ledger.transition(trade_no, State.SUBMITTING, expect=[State.QUEUED]).moved
    if state in (State.PROCESSING, State.UNKNOWN):
        assert ledger.transition(trade_no, state, platform_trade_no=ptn).moved
    backdate(world, trade_no, state, age)
    return trade_no


def backdate(world: World, trade_no: str, state: State, age: float) -> None:
    """Pretend the order entered ``state`` ``age`` seconds ago (its index score)."""
    when = world.ledger.now_ms() - int(age * 1000)
    assert world.redis.zadd(world.ledger.state_key(state), {trade_no: when}, xx=True, ch=True) in (
        0,
        1,
    )
    assert world.ledger.entered_ms(trade_no, state) == when


def in_flight(world: World, trade_no: str) -> bool:
    return bool(world.redis.exists(f"t:reconcile:inflight:{trade_no}"))


# --- each answer, each path ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [("success", State.SUCCEEDED), ("failed", State.FAILED), ("pending", State.PROCESSING)],
)
def test_details_answer_by_platform_id(world: World, status: str, expected: State) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-1")
    world.details.status("p-1", status)
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert world.details.calls == ["p-1"]
    assert world.vexora.calls == []  # the details API answered: no query by tradeNo
    assert world.state(trade_no) is expected
    order = world.ledger.get(trade_no)
    assert order is not None and order.provider_status == status
    assert report.errors == 0 and report.requeued == []
    if expected is not State.PROCESSING:
        assert report.moved == {f"PROCESSING->{expected}": 1}
        assert [h.split(" ")[0] for _, h in world.ledger.history(trade_no)][-1] == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [("0000", State.SUCCEEDED), ("00029", State.FAILED), ("0015", State.PROCESSING)],
)
def test_query_answer_by_trade_no_when_there_is_no_platform_id(
    world: World, status: str, expected: State
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.status(trade_no, status, platform_trade_no="p-77")
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert world.details.calls == []
    assert world.vexora.calls == [trade_no]
    assert world.state(trade_no) is expected
    order = world.ledger.get(trade_no)
    assert order is not None
    assert (order.platform_trade_no, order.provider_status) == ("p-77", status)
    assert report.moved == {f"UNKNOWN->{expected}": 1}


def test_details_not_found_asks_by_trade_no_with_its_own_slot(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-lag")
    world.vexora.status(trade_no, "0000", platform_trade_no="p-lag")
    world.reconciler.lookup_many([trade_no], budget=5)
    assert world.details.calls == ["p-lag"] and world.vexora.calls == [trade_no]
    assert world.limiter.taken == 2  # every provider call is under the shared limit
    assert world.state(trade_no) is State.SUCCEEDED


def test_unrecognised_details_status_is_confirmed_by_query(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-odd")
    world.details.status("p-odd", "on_hold")
    world.vexora.status(trade_no, "00029", platform_trade_no="p-odd")
    world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.FAILED


def test_query_by_trade_no_uses_the_account_of_the_order_market(world: World) -> None:
    fields = {"amount": "100", "accountNo": "880123456789012345", "firstname": "A"}
    ((trade_no, _),) = world.ledger.create_orders(
        [Payout("AR", "ARS", Decimal(100), None, fields)], batch_id="b-ar", market="AR"
    )
    assert world.ledger.transition(trade_no, State.SUBMITTING, expect=[State.QUEUED]).moved
    assert world.ledger.transition(trade_no, State.UNKNOWN).moved
    world.vexora.status(trade_no, "0000")
    world.reconciler.lookup_many([trade_no], budget=5)
    assert world.vexora.markets == ["AR"]
    assert world.state(trade_no) is State.SUCCEEDED


# --- not found: a grace period, resubmission rounds, then REVIEW -----------------------


def look(world: World, trade_no: str, monkeypatch: pytest.MonkeyPatch, at: float) -> Any:
    """One lookup of ``trade_no`` with the reconciler's clock ``at`` seconds ahead of now."""
    now_ms = functools.partial(Ledger.now_ms, world.ledger)
    monkeypatch.setattr(world.ledger, "now_ms", lambda: now_ms() + int(at * 1000))
    return world.reconciler.lookup_many([trade_no], budget=5)


def resubmitted(world: World, trade_no: str, error: str = "OutcomeUnknown") -> None:
    """The resubmission is claimed and its POST's outcome is unknown again."""
    assert world.ledger.transition(trade_no, State.SUBMITTING, expect=[State.QUEUED]).moved
    assert world.ledger.transition(trade_no, State.UNKNOWN, note=error).moved


def test_one_no_record_answer_is_not_believed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The POST may still be on its way at the provider: a plain not-found only starts
    # the grace period.
    trade_no = order_in(world, State.UNKNOWN)
    report = look(world, trade_no, monkeypatch, 0)
    assert world.state(trade_no) is State.UNKNOWN
    assert report.requeued == [] and world.submissions == []
    assert report.moved == {"not found, UNKNOWN asked again later": 1}
    order = world.ledger.get(trade_no)
    assert order is not None and order.unseen_ms is not None and order.resubmits == 0


def test_no_record_twice_within_the_grace_period_still_waits(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    look(world, trade_no, monkeypatch, 0)
    first = world.ledger.get(trade_no)
    look(world, trade_no, monkeypatch, 29)
    assert world.state(trade_no) is State.UNKNOWN and world.submissions == []
    assert world.ledger.get(trade_no) == first  # the first miss still counts from its time


def test_no_record_twice_30s_apart_resubmits_the_same_trade_no(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    look(world, trade_no, monkeypatch, 0)
    report = look(world, trade_no, monkeypatch, 30)
    assert world.state(trade_no) is State.QUEUED
    assert report.requeued == [trade_no]
    assert world.published_submissions() == [trade_no]
    assert world.ledger.history(trade_no)[-1][1] == "QUEUED provider has no record"
    order = world.ledger.get(trade_no)
    assert order is not None and order.resubmits == 1


@pytest.mark.parametrize(
    "undocumented",
    [NotFound("query: the provider shows no such order (code 9001: unknown order)", code="9001")],
)
def test_an_undocumented_refusal_counts_like_not_found(
    world: World, monkeypatch: pytest.MonkeyPatch, undocumented: NotFound
) -> None:
    # What the client makes of any refusal of the query (test_vexora): no record shown.
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.answers[trade_no] = undocumented
    look(world, trade_no, monkeypatch, 0)
    look(world, trade_no, monkeypatch, 31)
    assert world.state(trade_no) is State.QUEUED


@pytest.mark.parametrize(
    "failure",
    [
        OutcomeUnknown("query: outcome unknown (HTTP 502)", status_code=502),
        OutcomeUnknown("query: connection reset"),
        RateLimited(retry_after=1.0),
    ],
)
def test_a_failed_lookup_is_no_answer_and_does_not_count(
    world: World, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.answers[trade_no] = failure
    look(world, trade_no, monkeypatch, 0)
    del world.vexora.answers[trade_no]  # the provider answers not-found from now on
    look(world, trade_no, monkeypatch, 40)  # the first real answer: the grace starts
    assert world.state(trade_no) is State.UNKNOWN
    world.vexora.answers[trade_no] = failure
    look(world, trade_no, monkeypatch, 80)  # fails again: neither counts nor resets
    del world.vexora.answers[trade_no]
    look(world, trade_no, monkeypatch, 81)
    assert world.state(trade_no) is State.QUEUED


def test_a_lookup_that_shows_the_payout_takes_its_state(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    look(world, trade_no, monkeypatch, 0)
    world.vexora.status(trade_no, "0000", platform_trade_no="p-late")
    look(world, trade_no, monkeypatch, 45)
    assert world.state(trade_no) is State.SUCCEEDED and world.submissions == []


def test_each_resubmission_gets_its_own_grace_period(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    look(world, trade_no, monkeypatch, 0)
    look(world, trade_no, monkeypatch, 30)
    resubmitted(world, trade_no)
    # The miss noted for the first POST says nothing about the second.
    look(world, trade_no, monkeypatch, 120)
    assert world.state(trade_no) is State.UNKNOWN
    look(world, trade_no, monkeypatch, 150)
    assert world.state(trade_no) is State.QUEUED
    order = world.ledger.get(trade_no)
    assert order is not None and order.resubmits == 2


def test_no_record_after_the_last_round_goes_to_review_with_the_reason(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    at = 0.0
    for _ in range(MAX_NO_RECORD_RESUBMITS):
        look(world, trade_no, monkeypatch, at)
        look(world, trade_no, monkeypatch, at + NO_RECORD_GRACE)
        assert world.state(trade_no) is State.QUEUED
        resubmitted(world, trade_no)
        at += 100
    look(world, trade_no, monkeypatch, at)
    report = look(world, trade_no, monkeypatch, at + NO_RECORD_GRACE)
    assert report.review == [trade_no]
    order = world.ledger.get(trade_no)
    assert order is not None and order.state is State.REVIEW
    assert order.reason == "provider has no record after 3 resubmissions"
    assert len(world.published_submissions()) == MAX_NO_RECORD_RESUBMITS


def test_expired_claim_is_looked_up_and_requeued_when_the_provider_has_no_record(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world()
    lease = world.reconciler.settings.claim_lease
    expired = order_in(world, State.SUBMITTING, age=lease + 5)
    live = order_in(world, State.SUBMITTING, age=lease - 20)  # its worker may still be at it
    report = world.reconciler.run_pass()
    assert report.published == {State.SUBMITTING: 1} and report.stale_claims == 1
    assert world.published_lookups() == [expired]
    world.reconciler.lookup_many(world.published_lookups(), budget=5)
    # The same grace period as for UNKNOWN: the dead worker's POST may be on its way.
    assert world.state(expired) is State.SUBMITTING and world.submissions == []
    look(world, expired, monkeypatch, 30)
    assert world.state(expired) is State.QUEUED
    assert world.published_submissions() == [expired]
    assert world.state(live) is State.SUBMITTING


def test_claim_taken_again_since_the_pass_is_left_to_its_worker(world: World) -> None:
    trade_no = order_in(world, State.SUBMITTING, age=DAY)
    world.reconciler.run_pass()
    # Before the lookup runs, a duplicate delivery recovers it and a worker claims it anew.
    world.ledger.transition(trade_no, State.QUEUED, expect=[State.SUBMITTING])
    world.ledger.transition(trade_no, State.SUBMITTING, expect=[State.QUEUED])
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert report.moved == {"claim is live": 1}
    assert world.vexora.calls == [] and world.limiter.taken == 0
    assert world.state(trade_no) is State.SUBMITTING and world.submissions == []


def test_not_found_does_not_pull_back_an_order_claimed_again_meanwhile(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    look(world, trade_no, monkeypatch, 0)
    look(world, trade_no, monkeypatch, 10)  # the miss, 10 s later
    later(world, monkeypatch, 20)  # and 30 s after the first, this lookup's

    def requeued_and_claimed_elsewhere() -> NotFound:
        # Another lookup requeued it and a worker claimed it while this query was out.
        world.ledger.transition(trade_no, State.QUEUED, expect=[State.UNKNOWN])
        world.ledger.transition(trade_no, State.SUBMITTING, expect=[State.QUEUED])
        return NotFound("query: order not found")

    world.vexora.answers[trade_no] = requeued_and_claimed_elsewhere
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.SUBMITTING
    assert report.requeued == [] and world.submissions == []
    order = world.ledger.get(trade_no)
    assert order is not None and order.unseen_ms is None  # nothing noted on the new POST


def test_expired_claim_the_provider_knows_takes_the_provider_state(world: World) -> None:
    trade_no = order_in(world, State.SUBMITTING, age=DAY / 2)
    world.vexora.status(trade_no, "0015", platform_trade_no="p-9")
    world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.PROCESSING
    assert world.published_submissions() == []


def test_not_found_for_processing_changes_nothing(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-gone")
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.PROCESSING
    assert report.requeued == [] and world.published_submissions() == []
    assert report.moved == {"not found, PROCESSING unchanged": 1}


def test_not_found_for_unknown_with_a_platform_id_is_not_resubmitted(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN, ptn="p-seen")
    world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.UNKNOWN
    assert world.published_submissions() == []


# --- contradictions and deadlines ------------------------------------------------------


def test_answer_contradicting_a_final_state_is_a_discrepancy(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-c")

    def webhook_first() -> Disbursement:
        # A webhook settles the order FAILED while the lookup is on its way...
        world.ledger.transition(trade_no, State.FAILED, report=True, note="webhook")
        # ...and the details API says it succeeded.
        return parse_disbursement({"transaction_id": "p-c", "status": "success"})

    world.details.answers["p-c"] = webhook_first
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.FAILED
    assert report.discrepancies == 1
    assert world.ledger.discrepancies() == [trade_no]
    summary = world.ledger.batch("b1")
    assert summary is not None and summary.discrepancies == 1
    order = world.ledger.get(trade_no)
    assert order is not None and order.discrepancy is not None
    assert order.discrepancy.startswith("SUCCEEDED")


def test_final_order_is_not_asked_about(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-f")
    world.ledger.transition(trade_no, State.SUCCEEDED)
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert world.details.calls == [] and world.limiter.taken == 0
    assert report.moved == {"already SUCCEEDED": 1}


def later(world: World, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The reconciler's clock (the Redis server's) moves ``seconds`` ahead."""
    now_ms = world.ledger.now_ms
    monkeypatch.setattr(world.ledger, "now_ms", lambda: now_ms() + int(seconds * 1000))


def test_pending_past_the_deadline_goes_to_review_with_its_reason(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-slow")
    world.details.status("p-slow", "pending")
    later(world, monkeypatch, DAY + 60)
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.REVIEW
    assert report.review == [trade_no]
    order = world.ledger.get(trade_no)
    assert order is not None and order.reason is not None
    assert (
        order.reason.startswith("not final after 864") and "provider says pending" in order.reason
    )
    assert world.ledger.count(State.REVIEW) == 1  # listed for `disburse status`


def test_deadline_also_applies_when_lookups_keep_failing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.UNKNOWN, ptn="p-err")
    world.details.answers["p-err"] = OutcomeUnknown("details: provider error (HTTP 500)")
    later(world, monkeypatch, DAY + 60)
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert report.errors == 1
    assert world.state(trade_no) is State.REVIEW
    order = world.ledger.get(trade_no)
    assert order is not None and order.reason is not None and "OutcomeUnknown" in order.reason


def test_deadline_counts_from_the_first_send_not_from_creation(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Created (say, held for approval) long ago, but only sent a moment ago.
    trade_no = order_in(world, State.PROCESSING, ptn="p-held")
    world.redis.hset(
        world.ledger.order_key(trade_no), "created", world.ledger.now_ms() - int(3 * DAY * 1000)
    )
    world.details.status("p-held", "pending")
    later(world, monkeypatch, 3600)
    world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.PROCESSING


def test_final_answer_past_the_deadline_is_final_not_review(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-late")
    world.details.status("p-late", "success")
    later(world, monkeypatch, 2 * DAY)
    world.reconciler.lookup_many([trade_no], budget=5)
    assert world.state(trade_no) is State.SUCCEEDED


# --- the pass: lock, gate, in-flight markers, order ------------------------------------


def test_pass_fans_out_only_stale_pending_orders_oldest_first(world: World) -> None:
    old_processing = order_in(world, State.PROCESSING, ptn="p-a", age=300)
    older_unknown = order_in(world, State.UNKNOWN, age=600)
    fresh = order_in(world, State.PROCESSING, ptn="p-b", age=10)  # under RECONCILE_AFTER
    queued = order_in(world, State.QUEUED, age=600)  # not a lookup: the sweeper's
    world.queue_length[0] = 1
    report = world.reconciler.run_pass()
    assert world.published_lookups() == [older_unknown, old_processing]
    assert fresh not in world.published_lookups() and queued not in world.published_lookups()
    assert report.published == {State.UNKNOWN: 1, State.PROCESSING: 1}
    assert in_flight(world, older_unknown) and in_flight(world, old_processing)


def test_pass_does_nothing_while_another_holds_the_lock(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-l")
    world.redis.set("t:reconcile:lock", "another-owner", px=60_000)
    report = world.reconciler.run_pass()
    assert not report.ran and "another reconcile pass is running" in str(report)
    assert world.lookups == [] and not in_flight(world, trade_no)
    assert world.redis.get("t:reconcile:lock") == "another-owner"  # not released by us


def test_pass_releases_its_lock(world: World) -> None:
    world.reconciler.run_pass()
    assert not world.redis.exists("t:reconcile:lock")


def test_second_pass_right_after_does_nothing(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-g")
    first = world.reconciler.run_pass()
    world.redis.delete(f"t:reconcile:inflight:{trade_no}")  # even with no marker
    second = world.reconciler.run_pass()
    assert first.ran and first.lookups == 1
    assert not second.ran and "ran less than 8 s ago" in str(second)
    assert world.published_lookups() == [trade_no]


def test_order_is_never_fanned_out_twice_while_its_lookup_is_outstanding(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-i")
    world.details.status("p-i", "pending")
    world.reconciler.run_pass()
    again = world.next_pass()
    assert again.ran and again.lookups == 0 and again.skipped_in_flight == 1
    assert world.published_lookups() == [trade_no]
    # The lookup runs (still pending): the next pass may ask again.
    world.reconciler.lookup_many([trade_no], budget=5)
    assert not in_flight(world, trade_no)
    third = world.next_pass()
    assert third.lookups == 1
    assert world.published_lookups() == [trade_no, trade_no]


def test_lookups_requested_outside_a_pass_are_not_fanned_out_again(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    countdowns: list[float | None] = []
    publish = world.reconciler.publish_lookups

    def recording(trade_nos: Any, countdown: float | None = None) -> object:
        countdowns.append(countdown)
        return publish(trade_nos)

    world.reconciler.publish_lookups = recording
    assert world.reconciler.request_lookups([trade_no], countdown=5.0) == 1
    assert countdowns == [5.0]
    assert world.reconciler.request_lookups([trade_no]) == 0
    assert world.reconciler.run_pass().skipped_in_flight == 1
    assert world.published_lookups() == [trade_no]


def test_recovery_lookup_leaves_the_pass_marker_alone(world: World) -> None:
    trade_no = order_in(world, State.SUBMITTING, age=DAY)
    world.reconciler.run_pass()
    world.vexora.status(trade_no, "0015")
    world.reconciler.lookup(trade_no)  # a duplicate submit delivery found the stale claim
    assert world.state(trade_no) is State.PROCESSING
    assert in_flight(world, trade_no)  # the pass's own lookup message clears it


def test_failed_publish_frees_the_orders_for_the_next_pass(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-x")

    def broken(trade_nos: object) -> None:
        raise ConnectionError("broker down")

    world.reconciler.publish_lookups = broken
    with pytest.raises(ConnectionError):
        world.reconciler.run_pass()
    assert not in_flight(world, trade_no)


def test_pass_reads_every_page_even_with_equal_scores(world: World) -> None:
    count = PAGE * 2 + 7
    trade_nos = new_orders(world, count)  # created together: the same index score
    world.redis.zadd(world.ledger.state_key(State.QUEUED), dict.fromkeys(trade_nos, 1000), xx=True)
    report = world.reconciler.run_pass()
    assert report.swept == count
    assert sorted(world.published_submissions()) == sorted(trade_nos)


# --- the sweeper ------------------------------------------------------------------------


def test_sweeper_only_when_the_submit_queue_is_empty(world: World) -> None:
    lost = order_in(world, State.QUEUED, age=400)
    world.queue_length[0] = 3
    report = world.reconciler.run_pass()
    assert report.swept == 0 and world.submissions == []
    assert "submit queue is not empty" in str(report)
    world.queue_length[0] = 0
    assert world.next_pass().swept == 1
    assert world.published_submissions() == [lost]


def test_sweeper_republishes_only_old_queued_orders_and_not_twice(world: World) -> None:
    lost = order_in(world, State.QUEUED, age=400)
    recent = order_in(world, State.QUEUED, age=100)
    held = new_orders(world, 1, batch="b-held")
    report = world.reconciler.run_pass()
    assert report.swept == 1
    assert world.published_submissions() == [lost]
    assert (
        recent not in world.published_submissions() and held[0] not in world.published_submissions()
    )
    assert world.next_pass().swept == 0  # the same orders are not republished every pass
    assert world.published_submissions() == [lost]
    assert world.state(lost) is State.QUEUED  # the claim decides; the sweeper moves nothing


def test_sweeper_is_skipped_not_the_pass_when_the_queue_length_is_unknown(world: World) -> None:
    pending = order_in(world, State.PROCESSING, ptn="p-q")
    order_in(world, State.QUEUED, age=400)
    world.queue_length[0] = ConnectionError("broker unreachable")
    report = world.reconciler.run_pass()
    assert report.ran and report.swept == 0 and world.submissions == []
    assert "submit queue length unknown (ConnectionError)" in str(report)
    assert world.published_lookups() == [pending]


def test_sweeper_waits_while_submissions_are_paused(world: World) -> None:
    order_in(world, State.QUEUED, age=400)
    world.reconciler.pause.pause("operator")
    report = world.reconciler.run_pass()
    assert report.swept == 0 and "paused" in str(report)
    world.reconciler.pause.resume()
    assert world.next_pass().swept == 1


def expire_lease(world: World, *trade_nos: str) -> None:
    """Lease the orders as a submit task would, and let the leases run out (it died)."""
    world.reconciler.leases.take(trade_nos)
    world.redis.zadd(world.reconciler.leases.key, dict.fromkeys(trade_nos, 1), xx=True)


def test_queued_orders_of_a_dead_task_are_republished_however_long_the_queue(
    world: World,
) -> None:
    stranded = new_orders(world, 3)
    claimed, done = stranded[1], stranded[2]
    assert world.ledger.transition(claimed, State.SUBMITTING).moved
    assert world.ledger.transition(done, State.CANCELLED).moved
    expire_lease(world, *stranded)
    world.queue_length[0] = 1000  # a big batch still queued
    report = world.reconciler.run_pass()
    assert report.abandoned == 1 and report.swept == 0
    assert "1 QUEUED orders republished (their submit task died)" in str(report)
    # Only the one still QUEUED: the claim lease and a lookup recover the claimed one.
    assert world.published_submissions() == [stranded[0]]
    assert world.next_pass().abandoned == 0  # taken once, not on every pass
    assert world.published_submissions() == [stranded[0]]


def test_orders_of_a_live_task_are_left_alone(world: World) -> None:
    orders = new_orders(world, 2)
    world.reconciler.leases.take(orders)  # renewed by its task
    world.queue_length[0] = 1000
    assert world.reconciler.run_pass().abandoned == 0
    assert world.submissions == []


def test_orders_of_a_dead_task_wait_while_paused_and_go_out_after_resume(world: World) -> None:
    (order,) = new_orders(world)
    expire_lease(world, order)
    world.reconciler.pause.pause("operator")
    assert world.reconciler.run_pass().abandoned == 0 and world.submissions == []
    world.reconciler.pause.resume()
    assert world.next_pass().abandoned == 1
    assert world.published_submissions() == [order]


def test_orders_of_a_dead_task_not_published_are_taken_up_by_the_next_pass(world: World) -> None:
    (order,) = new_orders(world)
    expire_lease(world, order)

    def broker_down(trade_nos: object) -> None:
        raise ConnectionError("broker unreachable")

    world.reconciler.publish_submissions = broker_down
    with pytest.raises(ConnectionError):
        world.reconciler.run_pass()
    world.reconciler.publish_submissions = lambda ts: world.submissions.append(list(ts))
    assert world.next_pass().abandoned == 1
    assert world.published_submissions() == [order]


# --- failures during lookups -----------------------------------------------------------


def test_provider_error_is_counted_and_the_order_left_for_the_next_pass(world: World) -> None:
    trade_no = order_in(world, State.PROCESSING, ptn="p-e")
    world.details.answers["p-e"] = OutcomeUnknown("details: provider error (HTTP 500)")
    world.reconciler.run_pass()
    report = world.reconciler.lookup_many(world.published_lookups(), budget=5)
    assert report.errors == 1 and world.state(trade_no) is State.PROCESSING
    assert not in_flight(world, trade_no)
    assert world.next_pass().lookups == 1


def test_token_unavailable_is_counted_and_holds_the_details_api(world: World) -> None:
    first = order_in(world, State.PROCESSING, ptn="p-t1")
    second = order_in(world, State.PROCESSING, ptn="p-t2")
    no_platform_id = order_in(world, State.UNKNOWN)
    world.details.answers["p-t1"] = TokenUnavailable("fetch failed; backing off")
    world.details.status("p-t2", "success")
    world.vexora.status(no_platform_id, "0000")
    world.reconciler.run_pass()
    report = world.reconciler.lookup_many([first, second, no_platform_id], budget=5)
    assert report.errors == 1 and report.deferred == 1
    # One details call, not one per order: the rest wait out the hold without a slot.
    assert world.details.calls == ["p-t1"]
    assert world.limiter.taken == 2
    assert world.state(first) is State.PROCESSING and world.state(second) is State.PROCESSING
    assert world.state(no_platform_id) is State.SUCCEEDED  # the query path needs no token
    assert not any(in_flight(world, t) for t in (first, second, no_platform_id))
    # After the hold, the details API is asked again.
    world.redis.delete("t:reconcile:details-hold")
    world.details.answers["p-t1"] = parse_disbursement(
        {"transaction_id": "p-t1", "status": "failed"}
    )
    world.reconciler.lookup_many([first, second], budget=5)
    assert world.state(first) is State.FAILED and world.state(second) is State.SUCCEEDED


def test_authentication_failure_also_holds_the_details_api(world: World) -> None:
    a = order_in(world, State.PROCESSING, ptn="p-a1")
    b = order_in(world, State.PROCESSING, ptn="p-a2")
    world.details.answers["p-a1"] = AuthenticationFailed("details: unauthorized (HTTP 401)")
    report = world.reconciler.lookup_many([a, b], budget=5)
    assert (report.errors, report.deferred, world.details.calls) == (1, 1, ["p-a1"])
    assert world.redis.pttl("t:reconcile:details-hold") > 0


def test_rate_limited_by_the_provider_slows_everyone(world: World) -> None:
    trade_no = order_in(world, State.UNKNOWN)
    world.vexora.answers[trade_no] = RateLimited(retry_after=2.5)
    report = world.reconciler.lookup_many([trade_no], budget=5)
    assert report.errors == 1 and world.limiter.penalties == [2.5]
    assert world.state(trade_no) is State.UNKNOWN


def test_rate_limit_budget_spent_hands_the_rest_on(make_world: Callable[..., World]) -> None:
    world = make_world(limiter=FakeLimiter(slots=2))
    orders = [order_in(world, State.PROCESSING, ptn=f"p-r{i}") for i in range(5)]
    for i in range(5):
        world.details.status(f"p-r{i}", "success")
    world.reconciler.run_pass()
    report = world.reconciler.lookup_many(orders, budget=5)
    assert report.leftover == orders[2:]
    assert [world.state(t) for t in orders[:2]] == [State.SUCCEEDED] * 2
    assert [in_flight(world, t) for t in orders] == [False, False, True, True, True]


# --- what `disburse reconcile` prints --------------------------------------------------


def test_pass_report_says_what_changed(world: World) -> None:
    order_in(world, State.SUBMITTING, age=DAY)
    order_in(world, State.UNKNOWN, age=600)
    order_in(world, State.PROCESSING, ptn="p-1", age=600)
    order_in(world, State.PROCESSING, ptn="p-2", age=600)
    order_in(world, State.QUEUED, age=600)
    text = str(world.reconciler.run_pass())
    assert "4 orders sent to lookup" in text
    assert "1 SUBMITTING with an expired claim" in text
    assert "1 UNKNOWN" in text and "2 PROCESSING" in text
    assert "1 QUEUED orders republished" in text
    again = str(world.next_pass())
    assert "no pending order is due" in again and "4 orders skipped" in again
    assert "no lost QUEUED order" in again


def test_empty_pass_report() -> None:
    text = str(PassReport())
    assert "no pending order is due" in text and "no lost QUEUED order" in text
