"""Pending orders and the pieces that look them up, on the test ledger (PostgreSQL) and
fakeredis, with fake provider clients and recording publishers: shared by test_lookup,
test_reconcile, test_inflight and test_deadline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis

from schemas import Payout
from tests import ledger_reads
from tests.unit import ledger_sql
from worker.coordination.inflight import InFlightLookups
from worker.coordination.leases import Leases
from worker.coordination.pause import PauseSwitch
from worker.core.exceptions import NotFound, RateLimitTimeout
from worker.core.settings import Rate, Settings
from worker.core.states import State
from worker.flows.deadline import ReviewDeadline
from worker.flows.lookup import Lookups
from worker.flows.reads import DetailsReads
from worker.flows.reconcile import PassReport, Reconciler
from worker.ledger import Ledger, new_batch_id
from worker.provider.answers import PayoutResult, payout_result
from worker.provider.details import Throttle
from worker.provider.disbursements import Disbursement, parse_disbursement

DAY = 86400.0

Answer = Any  # a result, an exception to raise, or a callable returning either


def answer(given: Answer) -> Any:
    if callable(given) and not isinstance(given, type):
        given = given()
    if isinstance(given, BaseException):
        raise given
    return given


class ClockLedger(Ledger):
    """The ledger, with its clock (the database server's) ``ahead`` seconds in the future."""

    ahead: float = 0.0

    def now_ms(self) -> int:
        return super().now_ms() + int(self.ahead * 1000)


class FakeDetails:
    """details(platform id) -> the answer set for that id (NotFound when none is)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: list[str] = []

    def status(self, platform_trade_no: str, status: str) -> None:
        self.answers[platform_trade_no] = parse_disbursement(
            {"transaction_id": platform_trade_no, "status": status}
        )

    def details(self, transaction_id: str, *, throttle: Throttle) -> Disbursement:
        throttle()  # the real client: before every request it sends
        self.calls.append(transaction_id)
        found: Disbursement = answer(
            self.answers.get(transaction_id, NotFound("details: not found"))
        )
        return found


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
        result: PayoutResult = answer(
            self.answers.get(trade_no, NotFound("query: order not found"))
        )
        return result


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
class Recorder:
    """A fake publisher: records what it is asked to publish, or fails like a broker down."""

    calls: list[list[str]] = field(default_factory=list)
    countdowns: list[float | None] = field(default_factory=list)
    fail: bool = False

    def __call__(self, trade_nos: Sequence[str], *, countdown: float | None = None) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.calls.append(list(trade_nos))
        self.countdowns.append(countdown)

    def published(self) -> list[str]:
        return [t for chunk in self.calls for t in chunk]


@dataclass
class QueueLength:
    """A fake submit_queue_length: a length, or an exception to raise."""

    value: int | Exception = 0

    def __call__(self) -> int:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "key_prefix": "t",
        "reconcile_every": 10.0,
        "reconcile_after": 60.0,
        "review_after": DAY,
        "sweep_after": 300.0,
    }
    return Settings(**{**values, **overrides})


@dataclass
class World:
    redis: redis.Redis
    ledger: ClockLedger
    settings: Settings
    details: DetailsReads
    vexora: FakeVexora
    limiter: FakeLimiter
    lookups_published: Recorder
    submissions: Recorder
    queue_length: QueueLength
    in_flight: InFlightLookups
    pause: PauseSwitch
    leases: Leases
    lookups: Lookups
    reconciler: Reconciler

    @property
    def fake_details(self) -> FakeDetails:
        assert isinstance(self.details, FakeDetails)
        return self.details

    def next_pass(self) -> PassReport:
        """A pass as the next beat tick would run it (the gate of the last one expired)."""
        self.redis.delete("t:reconcile:gate")
        return self.reconciler.run_pass()

    def state(self, trade_no: str) -> State:
        order = self.ledger.get(trade_no)
        assert order is not None
        return order.state

    def look(self, trade_no: str, at: float) -> Any:
        """One lookup of ``trade_no`` with the clock ``at`` seconds ahead of now."""
        self.ledger.ahead = at
        return self.lookups.run([trade_no], budget=5)

    def later(self, seconds: float) -> None:
        """The clock (the database server's) moves ``seconds`` further ahead."""
        self.ledger.ahead += seconds


def make_world(
    client: redis.Redis,
    ledger: Ledger,
    *,
    limiter: FakeLimiter | None = None,
    details: DetailsReads | None = None,
    **overrides: Any,
) -> World:
    """The pieces on ``client`` (Redis) and on the database of ``ledger`` (the fixture's)."""
    config = settings(**overrides)
    clock = ClockLedger(ledger.pool)
    vexora, limiter = FakeVexora(), limiter or FakeLimiter()
    details = details or FakeDetails()
    lookups_published, submissions, queue_length = Recorder(), Recorder(), QueueLength()
    in_flight = InFlightLookups.from_settings(client, lookups_published, config)
    pause = PauseSwitch(client, prefix="t")
    leases = Leases(client, prefix="t")
    lookups = Lookups(
        clock,
        vexora.client_of,
        details,
        limiter,
        in_flight,
        ReviewDeadline(clock, config.review_after),
        claim_lease=config.claim_lease,
        recover_budget=config.submit_budget,
        publish_submissions=submissions,
        abandoned_grace=config.abandoned_claim_grace,
    )
    reconciler = Reconciler(
        clock,
        in_flight,
        pause,
        leases,
        client,
        config,
        publish_submissions=submissions,
        submit_queue_length=queue_length,
    )
    return World(
        client, clock, config, details, vexora, limiter, lookups_published, submissions,
        queue_length, in_flight, pause, leases, lookups, reconciler,
    )  # fmt: skip


# --- building orders -------------------------------------------------------------------

_count = [0]


def new_orders(world: World, n: int = 1, *, hold: bool = False) -> list[str]:
    """``n`` QUEUED (or HELD) orders, in a batch of their own."""
    payouts = []
    for _ in range(n):
        _count[0] += 1
        fields = {"amount": "100000", "bankAccountNo": f"{_count[0]:013d}", "bankCode": "0002"}
        payouts.append(Payout("ID", "IDR", Decimal(100000), None, fields))
    batch = new_batch_id()
    created = world.ledger.create_orders(payouts, batch_id=batch, market="ID", hold=hold)
    return [t for t, _ in created]


def order_in(world: World, state: State, *, ptn: str | None = None, age: float = 120.0) -> str:
    """One order moved to ``state`` along the real path, entered ``age`` seconds ago."""
    (trade_no,) = new_orders(world)
    ledger = world.ledger
    if state is not State.QUEUED:
        assert ledger.claim(trade_no)[0].moved
    if state in (State.PROCESSING, State.UNKNOWN):
        assert ledger.transition(trade_no, state, source="submit", platform_trade_no=ptn).moved
    backdate(world, trade_no, state, age)
    return trade_no


def backdate(world: World, trade_no: str, state: State, age: float) -> None:
    """Pretend the order entered ``state`` ``age`` seconds ago."""
    when = world.ledger.now_ms() - int(age * 1000)
    set_entered(world, [trade_no], when)
    assert ledger_reads.entered_ms(world.ledger, trade_no, state) == when


def set_entered(world: World, trade_nos: Sequence[str], ms: int) -> None:
    """Pretend the orders entered their states at ``ms`` (server ms)."""
    ledger_sql.set_entered(world.ledger, trade_nos, ms)


def in_flight(world: World, trade_no: str) -> bool:
    return bool(world.redis.exists(f"t:reconcile:inflight:{trade_no}"))
