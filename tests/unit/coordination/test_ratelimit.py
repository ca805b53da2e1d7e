"""The cluster-wide limiter: strict spacing, shared by threads and processes, 429 pauses."""

from __future__ import annotations

import bisect
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

from worker.coordination.ratelimit import TAKE_AHEAD, RateLimiter, RateLimitTimeout, Slots
from worker.core.settings import Rate
from worker.dev.credentials import sandbox_settings
from worker.dev.redis_server import RedisServer

ClientFactory = Callable[[], redis.Redis]


@pytest.fixture
def new_client(any_redis: redis.Redis) -> Iterator[ClientFactory]:
    """Another client of the same server as ``any_redis`` (what another worker would hold)."""
    made: list[redis.Redis] = []
    kw = any_redis.connection_pool.connection_kwargs
    # fakeredis creates a server's db 0 on the first connection without holding its
    # lock: threads connecting first at the same time can each get a private db 0.
    any_redis.ping()

    def make() -> redis.Redis:
        if isinstance(any_redis, fakeredis.FakeRedis):
            client: redis.Redis = fakeredis.FakeRedis(
                host=kw["host"], port=kw["port"], decode_responses=True
            )
        else:
            client = redis.Redis(host=kw["host"], port=kw["port"], decode_responses=True)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def busiest_window(stamps: list[float], window: float = 1.0) -> int:
    """The most timestamps in any half-open interval [t, t + window)."""
    stamps = sorted(stamps)
    return max(
        (bisect.bisect_left(stamps, t + window) - i for i, t in enumerate(stamps)), default=0
    )


def expected(rate: float, duration: float) -> float:
    """Grants the limiter aims for: the rate less its headroom."""
    return rate * 0.97 * duration


# The count only shows the limiter does not throttle far below its rate (a wrong unit or
# a doubled interval would give half). An idle machine achieves ~0.97 of `expected`; a
# CPU-starved one wakes its sleepers late and loses slots, hence the generous bound.
ENOUGH = 0.8


class Recording(RateLimiter):
    """A limiter that notes the server time (seconds) of each grant, from the script's reply."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grants: list[float] = []

    def try_reply(self, reply: Any) -> float:
        wait = super().try_reply(reply)
        if wait == 0.0:
            self.grants.append(int(reply[1]) / 1_000_000)
        return wait


def hammer(limiter: Recording, duration: float) -> list[tuple[float, float]]:
    """Take slots as fast as allowed for ``duration``: (server time, wall time) of each grant."""
    grants = []
    stop = time.monotonic() + duration
    while (left := stop - time.monotonic()) > 0:
        try:
            limiter.acquire(timeout=left)
        except RateLimitTimeout:
            break
        grants.append((limiter.grants[-1], time.time()))
    return grants


def test_first_acquire_is_immediate(
    any_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    limiter = RateLimiter(any_redis, "first", Rate(10))
    assert limiter.try_acquire() == 0.0
    assert RateLimiter(any_redis, "first-acquire", Rate(10)).acquire() >= 0
    assert slept == []  # granted on the first ask, without sleeping


def test_second_try_waits_about_one_interval_and_takes_nothing(any_redis: redis.Redis) -> None:
    limiter = RateLimiter(any_redis, "second", Rate(10))
    assert limiter.interval == pytest.approx(1 / (10 * 0.97))
    assert limiter.try_acquire() == 0.0
    first_wait = limiter.try_acquire()
    assert limiter.interval - 0.05 < first_wait <= limiter.interval - limiter.tolerance
    # Nothing was taken by asking: the wait only shrinks as time passes.
    assert 0 < limiter.try_acquire() <= first_wait


def test_acquire_sleeps_until_the_next_slot(
    any_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What it asks to sleep, not how long the sleep took: a loaded machine oversleeps.
    sleeps = recorded_sleeps(monkeypatch)
    limiter = RateLimiter(any_redis, "sleep", Rate(10))
    limiter.acquire()
    waited = limiter.acquire()
    assert waited > limiter.interval - 0.03
    assert limiter.interval - 0.03 < sleeps[0] <= limiter.interval + 0.0005


def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``time.sleep`` from now on, recorded (and slept)."""
    sleeps: list[float] = []
    sleep = time.sleep

    def recording(seconds: float) -> None:
        sleeps.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording)
    return sleeps


def test_acquire_times_out_without_sleeping_in_vain(
    any_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(any_redis, "slow", Rate(1))
    limiter.acquire()
    sleeps = recorded_sleeps(monkeypatch)
    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(timeout=0.1)
    assert isinstance(caught.value, TimeoutError)
    assert sleeps == []
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(timeout=0)


def test_threads_with_own_clients_never_exceed_the_rate(
    any_redis: redis.Redis, new_client: ClientFactory
) -> None:
    rate, duration = 50, 1.5
    limiters = [Recording(new_client(), "threads", Rate(rate)) for _ in range(4)]
    results: list[list[tuple[float, float]]] = [[] for _ in limiters]
    start = threading.Barrier(len(limiters))

    def run(i: int) -> None:
        start.wait()
        results[i] = hammer(limiters[i], duration)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(limiters))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    grants = [grant for result in results for grant in result]
    assert busiest_window([server for server, _ in grants]) <= rate
    assert busiest_window([wall for _, wall in grants]) <= rate
    assert len(grants) >= ENOUGH * expected(rate, duration)
    assert all(results), "every thread got slots"


def _process_worker(url: str, duration: float, start: Any, out: Any) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    limiter = Recording(client, "processes", Rate(50))
    start.wait()
    out.put(hammer(limiter, duration))
    client.close()


def test_processes_never_exceed_the_rate(
    real_redis: redis.Redis, redis_server: RedisServer
) -> None:
    rate, duration, n = 50, 1.5, 3
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(redis_server.url, duration, start, out))
        for _ in range(n)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0

    grants = [grant for result in results for grant in result]
    assert busiest_window([server for server, _ in grants]) <= rate
    assert busiest_window([wall for _, wall in grants]) <= rate
    assert len(grants) >= ENOUGH * expected(rate, duration)
    assert all(results), "every process got slots"


def test_penalize_slows_every_client(any_redis: redis.Redis, new_client: ClientFactory) -> None:
    mine = RateLimiter(any_redis, "penalty", Rate(50))
    theirs = RateLimiter(new_client(), "penalty", Rate(50))
    assert mine.try_acquire() == 0.0
    mine.penalize(1.0)
    for limiter in (mine, theirs):
        # About 1 s to wait (less what this test took since the penalty: a loaded
        # machine may take a while), never more.
        assert 0.5 < limiter.try_acquire() <= 1.0
    # Workers reporting 429s from the same burst do not stack their pauses.
    theirs.penalize(1.0)
    mine.penalize(1.0)
    assert 0.5 < theirs.try_acquire() <= 1.0


def test_penalize_blocks_the_next_acquire(any_redis: redis.Redis) -> None:
    limiter = RateLimiter(any_redis, "penalty-block", Rate(50))
    limiter.penalize(0.2)
    assert limiter.acquire() > 0.15  # it waited out the penalty
    limiter.penalize(0)  # no-op
    assert limiter.try_acquire() > 0  # only the normal spacing after the grant


def test_limiters_with_different_names_are_independent(any_redis: redis.Redis) -> None:
    submit = RateLimiter(any_redis, "submit", Rate(1))
    details = RateLimiter(any_redis, "details", Rate(1))
    assert submit.try_acquire() == 0.0
    assert submit.try_acquire() > 0.5
    assert details.try_acquire() == 0.0
    submit.penalize(5)
    assert details.try_acquire() > 0.5  # its own spacing, not the 5 s penalty
    assert details.try_acquire() < 1.1


def test_key_expires_when_idle(any_redis: redis.Redis) -> None:
    limiter = RateLimiter(any_redis, "idle", Rate(50))
    assert limiter.key == "disburse:ratelimit:idle"
    limiter.acquire()
    assert 0 < any_redis.pttl(limiter.key) <= 22
    limiter.penalize(0.1)
    assert 50 < any_redis.pttl(limiter.key) <= 101
    time.sleep(0.15)
    assert not any_redis.exists(limiter.key)
    assert limiter.try_acquire() == 0.0


def test_schedule_is_in_server_microseconds(any_redis: redis.Redis) -> None:
    limiter = Recording(any_redis, "units", Rate(50))
    seconds, micros = any_redis.time()
    before = seconds * 1_000_000 + micros
    limiter.acquire()
    granted = round(limiter.grants[-1] * 1_000_000)
    assert granted >= before
    stored = any_redis.get(limiter.key)
    assert isinstance(stored, str) and stored.isdigit()  # whole microseconds, no exponent
    # The next slot is one interval after the grant, on the server's clock.
    assert abs(int(stored) - granted - limiter.interval * 1_000_000) <= 2


def _server_us(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


def test_a_due_slot_may_be_taken_early_without_moving_the_schedule(
    any_redis: redis.Redis,
) -> None:
    limiter = RateLimiter(any_redis, "early", Rate(1), tolerance=0.02)
    assert limiter.tolerance == 0.02
    due = _server_us(any_redis) + 15_000  # within the tolerance: granted now
    any_redis.set(limiter.key, due)
    assert limiter.try_acquire() == 0.0
    # The next slot counts from the slot taken, not from the (earlier) grant. (At least:
    # on a loaded machine the slot may be past due by the time it is taken, and then the
    # schedule counts from the server's now.)
    assert int(any_redis.get(limiter.key)) >= due + limiter._interval_us  # type: ignore[arg-type]


def test_a_slot_beyond_the_tolerance_waits_for_its_early_edge(any_redis: redis.Redis) -> None:
    limiter = RateLimiter(any_redis, "not-yet", Rate(1), tolerance=0.02)
    due = _server_us(any_redis) + 200_000
    any_redis.set(limiter.key, due)
    # At most 0.2 s less the 0.02 s tolerance (less still as the test itself takes time).
    assert 0 < limiter.try_acquire() <= 0.18
    assert int(any_redis.get(limiter.key)) == due  # type: ignore[arg-type]  # nothing taken


def test_tolerance_stays_inside_the_headroom_and_one_interval(fake_redis: redis.Redis) -> None:
    assert RateLimiter(fake_redis, "x", Rate(100)).tolerance == 0.003
    # At 1,000/s the interval (1.03 ms) caps it: never two slots at once.
    fast = RateLimiter(fake_redis, "x", Rate(1000))
    assert fast.tolerance == pytest.approx(fast.interval)
    # Without headroom any early grant could put rate + 1 into one second.
    assert RateLimiter(fake_redis, "x", Rate(100), headroom=1).tolerance == 0
    assert RateLimiter(fake_redis, "x", Rate(1), tolerance=1).tolerance == pytest.approx(
        0.8 * (1 / 0.97 - 1)
    )


def test_client_clock_is_not_used(real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker whose clock is an hour ahead still follows the shared schedule.
    skewed = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: skewed)
    limiter = Recording(real_redis, "skew", Rate(10))
    assert limiter.try_acquire() == 0.0
    assert abs(limiter.grants[-1] - (skewed - 3600)) < 5
    assert 0 < limiter.try_acquire() <= limiter.interval


def test_each_provider_account_has_its_own_schedule(any_redis: redis.Redis) -> None:
    env = {
        "DISBURSE_KEY_PREFIX": "acme",
        "VEXORA_RATE_LIMIT": "20/s",
        "VEXORA_AR_MERCHANT_NO": "M-AR",
        "VEXORA_AR_RATE_LIMIT": "5/s",
        "DETAILS_RATE_LIMIT": "300/m",
    }
    settings = sandbox_settings(env=env)
    shared = RateLimiter.for_submit(any_redis, settings, settings.account("ID"))
    ar = RateLimiter.for_submit(any_redis, settings, settings.account("AR"))
    details = RateLimiter.for_details(any_redis, settings)
    assert shared.key == "acme:ratelimit:submit:ID+JP+KH"
    assert ar.key == "acme:ratelimit:submit:AR"
    assert details.key == "acme:ratelimit:details"
    assert shared.interval == pytest.approx(1 / (20 * 0.97))
    assert ar.interval == pytest.approx(1 / (5 * 0.97))
    assert details.interval == pytest.approx(1 / (5 * 0.97))
    # AR's schedule is its own: a slot taken on it leaves the shared one free.
    assert ar.try_acquire() == 0.0 and ar.try_acquire() > 0
    assert shared.try_acquire() == 0.0


def test_headroom_must_be_a_fraction(fake_redis: redis.Redis) -> None:
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError):
            RateLimiter(fake_redis, "x", Rate(1), headroom=bad)
    assert RateLimiter(fake_redis, "x", Rate(4), headroom=1).interval == 0.25


def take_reply(limiter: RateLimiter, client: redis.Redis, count: int) -> Any:
    client.script_load(limiter._script.script)  # as the submit path's first acquire does
    pipe = client.pipeline(transaction=False)
    limiter.queue_take(pipe, count)
    (reply,) = pipe.execute()
    return reply


def take(limiter: RateLimiter, client: redis.Redis, count: int) -> Slots:
    return limiter.slots(take_reply(limiter, client, count))


def test_a_take_at_a_high_rate_gets_every_slot_due_within_the_take_ahead(
    any_redis: redis.Redis,
) -> None:
    limiter = RateLimiter(any_redis, "fast", Rate(100_000))
    reply = take_reply(limiter, any_redis, 16)
    wait_us, _, taken, first_us = (int(value) for value in reply)
    assert (wait_us, taken) == (0, 16)
    # The schedule moved past all 16: the next slot is due 16 intervals after the first
    # at the earliest. (Not read from the key: it expires a millisecond after its TAT, so
    # on a loaded machine it may be gone already, and then the next slot is "now".)
    next_first_us = int(take_reply(limiter, any_redis, 1)[3])
    assert next_first_us >= first_us + 16 * limiter._interval_us
    slots = limiter.slots(reply)
    assert len(slots.times) == 16
    assert list(slots.times) == sorted(slots.times)
    assert slots.times[-1] <= time.monotonic() + TAKE_AHEAD


def test_a_take_at_an_ordinary_rate_gets_the_due_slot_only(any_redis: redis.Redis) -> None:
    limiter = RateLimiter(any_redis, "ordinary", Rate(20))
    assert len(take(limiter, any_redis, 16).times) == 1  # the next is 50 ms away
    assert take(limiter, any_redis, 16).times == deque()  # and not due yet
    assert 0 < limiter.try_acquire() <= limiter.interval


def test_slots_taken_together_are_used_no_faster_than_the_rate(
    any_redis: redis.Redis, new_client: ClientFactory
) -> None:
    # 1,000/s: a take of 8 reaches 2 or 3 slots (TAKE_AHEAD is 2 ms, a slot 1.03 ms).
    rate, duration = 1000, 1.2
    used: list[list[float]] = [[] for _ in range(3)]
    taken: list[int] = []
    start = threading.Barrier(len(used))

    def run(i: int) -> None:
        client = new_client()
        limiter = RateLimiter(client, "together", Rate(rate))
        start.wait()
        stop = time.monotonic() + duration
        while time.monotonic() < stop:
            slots = take(limiter, client, 8)
            taken.append(len(slots.times))
            while (usable_from := slots.take()) is not None:
                time.sleep(max(0.0, usable_from - time.monotonic()))
                used[i].append(time.monotonic())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(used))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(taken) > 1  # several slots in one take
    assert busiest_window([stamp for part in used for stamp in part]) <= rate
