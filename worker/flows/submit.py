"""Submitting payouts: claim -> limit -> sign -> POST -> classify, many POSTs at once.

A submit task's thread is the coordinator: it claims orders in small groups, each
group in one statement with the provider's answers to the orders before, takes their
rate-limit slots, and hands each claimed order to a sender thread (worker.flows.senders)
that waits for its slot, POSTs and classifies. Up to ``concurrency`` POSTs are in flight
per Submitter, and never more: the senders are a pool of that many threads.

Threads, not an async client: the provider client (requests), the ledger (psycopg's
pool) and Redis are synchronous, and a POST spends its time waiting for the provider,
which threads do without holding the GIL; an order costs one thread switch more, not a
second client stack (measured in docs/architecture.md: 32 threads keep 32 POSTs of
250 ms in flight on a fraction of one core). The slots stay with the coordinator, so
the process takes them one after another, as one worker did before.

Everything that held with one POST at a time still holds: nothing is sent without a
claim, nothing claimed is left without a state (a claim not POSTed is given back, a
sender's unexpected error leaves the order UNKNOWN), a tradeNo is reused on every
attempt so the provider can refuse a repeat, and the task does not return while a POST
is in flight: each POST ends within the client's total deadline (connect + read
timeouts), which the task's time limit and so the claim lease already count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from worker.coordination.breaker import Breaker
from worker.coordination.metrics import Metrics
from worker.coordination.pause import PauseSwitch
from worker.coordination.ratelimit import RateLimitTimeout, Slots
from worker.core.defaults import LATE_SLOT, MAX_DELAY, SUBMIT_GROUP
from worker.core.settings import DEFAULT_SYSTEMIC_CODES
from worker.core.states import State
from worker.flows.senders import (
    GIVEN_BACK,
    Answer,
    ClaimHolder,
    Dispatch,
    Halt,
    Limiter,
    Next,
    PauseWatch,
    PayoutApi,
    Sender,
    Step,
)
from worker.ledger import Ledger, Transition

__all__ = ["ChunkReport", "ClaimHolder", "Limiter", "PayoutApi", "Step", "Submitter"]

log = logging.getLogger(__name__)


# What a claim found, and the fields to send when it claimed the order.
Claim = tuple[Transition, dict[str, str] | None]


def _next_group_size(size: int, waited: bool) -> int:
    """Doubled after a group whose slots were all free at once, else one."""
    return 1 if waited else min(SUBMIT_GROUP, size * 2)


def _claimed_from(group: list[str], claims: list[Claim], position: int) -> list[str]:
    """The orders of ``group`` this task claimed, from ``position`` on."""
    rest = zip(group[position:], claims[position:], strict=True)
    return [trade_no for trade_no, (claim, _) in rest if claim.moved]


@dataclass
class ChunkReport:
    """What a submit task leaves for later: the task publishes these."""

    retry: list[tuple[str, float]] = field(default_factory=list)
    query: list[str] = field(default_factory=list)
    leftover: list[str] = field(default_factory=list)
    paused: bool = False
    done: int = 0


@dataclass
class _Chunk:
    """One run's state, kept by the coordinator thread alone (``halt`` is shared)."""

    report: ChunkReport = field(default_factory=ChunkReport)
    in_flight: set[Future[Next]] = field(default_factory=set)
    # The provider's answers collected so far, applied with the next claims.
    answers: list[Answer] = field(default_factory=list)
    halt: Halt = field(default_factory=Halt)


@dataclass(frozen=True)
class _Slot:
    """An order's rate-limit slot: usable from (monotonic), the seconds waited for it,
    whether it was not free at once; or the step that stops the chunk instead."""

    usable_from: float = 0.0
    wait: float = 0.0
    waited: bool = False
    stop: Step | None = None


class Submitter:
    def __init__(
        self,
        ledger: Ledger,
        client: PayoutApi,
        limiter: Limiter,
        pause: PauseSwitch,
        *,
        claim_lease: float,
        recover: Callable[[str], object],
        metrics: Metrics | None = None,
        breaker: Breaker | None = None,
        systemic_codes: frozenset[str] = DEFAULT_SYSTEMIC_CODES,
        concurrency: int = 1,
        heartbeat: ClaimHolder | None = None,
        late_slot: float = LATE_SLOT,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
        self.ledger = ledger
        self.limiter = limiter
        self.pause = pause
        self.watch = PauseWatch(pause)
        self.sender = Sender(
            ledger,
            client,
            limiter,
            self.watch,
            breaker=breaker,
            systemic_codes=systemic_codes,
            late_slot=late_slot,
            heartbeat=heartbeat,
        )
        self.claim_lease = claim_lease
        # Asks the provider about an order whose claim holder is gone (Lookups.recover):
        # a duplicate delivery never POSTs again.
        self.recover = recover
        self.metrics = metrics
        self.concurrency = concurrency
        self.heartbeat = heartbeat
        # Built on first use: in the process that runs the tasks (after a prefork fork).
        self._senders: ThreadPoolExecutor | None = None
        # How many orders the next group claims (see SUBMIT_GROUP): carried from one task to the
        # next, so that a run of tasks does not start every chunk at one.
        self._group_size = 1

    def run(self, trade_nos: Sequence[str], budget: float) -> ChunkReport:
        """Submit the orders, up to ``concurrency`` at once, until done, paused, or
        ``budget`` seconds are spent (no POST starts after that; those started end)."""
        try:
            return self._run(trade_nos, time.monotonic() + budget)
        finally:
            if self.metrics:
                self.metrics.flush()

    def _run(self, trade_nos: Sequence[str], deadline: float) -> ChunkReport:
        chunk = _Chunk()
        report = chunk.report
        # Each order once: a repeat in one chunk would only be a duplicate delivery.
        orders = list(dict.fromkeys(trade_nos))
        size = self._group_size
        start = 0
        try:
            while start < len(orders):
                # A group is claimed once a sender is free: claims wait for their POSTs
                # at most as long as one group takes.
                self._collect(chunk, block=len(chunk.in_flight) >= self.concurrency)
                if chunk.halt.step is not None:
                    break
                if start and time.monotonic() >= deadline:
                    # Checked before each claim, not only in the rate-limit wait: orders
                    # that are skipped, or recovered by a lookup, spend the budget too, and
                    # the task's time limit (and so the claim lease) is derived from it.
                    chunk.halt.set(Step.OUT_OF_TIME)
                    break
                group = orders[start : start + size]
                if self.watch.paused():  # read before a claim, at most every PAUSE_LOOK_EVERY
                    chunk.halt.set(Step.PAUSED)
                    break
                claims = self._claim(group, chunk)
                claimed = _claimed_from(group, claims, 0)
                slots = self._slots_for(claimed)
                if slots is None:
                    chunk.halt.set(Step.PAUSED)
                    break
                waited = self._dispatch(group, claims, slots, deadline, chunk)
                size = self._group_size = _next_group_size(size, waited)
                start += len(group)
        except BaseException as exc:
            chunk.halt.set(Step.STOPPED, exc)  # senders not yet POSTing give their claims back
            raise
        finally:
            if chunk.halt.step in (Step.OUT_OF_TIME, Step.STOPPED):
                report.leftover += orders[start:]
            report.paused = report.paused or chunk.halt.step is Step.PAUSED
            # Never return while a POST is in flight; then the last answers, also when
            # the chunk stops early or on an error.
            while chunk.in_flight:
                self._collect(chunk, block=True)
            if chunk.answers:
                try:
                    self.ledger.claim_many([], answers=chunk.answers)
                finally:
                    self._drop([trade_no for trade_no, _ in chunk.answers])
        if chunk.halt.error is not None:
            raise chunk.halt.error  # a bug stays loud; every order it touched has a state
        return report

    def _claim(self, group: list[str], chunk: _Chunk) -> list[Claim]:
        """Claim ``group`` and write the answers collected so far, in one statement (so one
        commit per group instead of two per payout); the claims are held from here."""
        applied, chunk.answers = chunk.answers, []
        try:
            claims = self.ledger.claim_many(group, answers=applied)
        finally:
            self._drop([trade_no for trade_no, _ in applied])
        if self.heartbeat is not None:
            self.heartbeat.hold(_claimed_from(group, claims, 0))
        return claims

    def _slots_for(self, claimed: list[str]) -> Slots | None:
        """The slots of the orders just claimed, or None when submissions are paused (the
        claims are given back). Taken after the claim's commit, right before the POSTs: a
        slot taken before it would be spent later by the claim's round trip, and one a
        sender reaches too late is not used at all (LATE_SLOT)."""
        if not claimed:
            return Slots()
        try:
            slots = self._slots(len(claimed))
        except BaseException:
            self._give_back_after_error(claimed)
            raise
        if slots is None:
            self._give_back(claimed, Step.PAUSED)
        return slots

    def _slots(self, count: int) -> Slots | None:
        """Up to ``count`` rate-limit slots, or None when submissions are paused.

        One round trip to Redis: the pause switch, then the take, in one pipeline on the
        switch's server, which the limiter shares. Slots are taken even when the switch
        is on, or the claims then fail (a duplicate delivery); they go unused, which
        only costs rate. An error of the take (the limiter's script not cached after a
        Redis restart) just means: none taken, wait for one.
        """
        pipe = self.pause.redis.pipeline(transaction=False)
        self.pause.queue_reason(pipe)
        self.limiter.queue_take(pipe, count)
        paused, taken = pipe.execute(raise_on_error=False)
        if self.pause.reason_reply(paused) is not None:
            return None
        self.watch.saw_running()
        return Slots() if isinstance(taken, Exception) else self.limiter.slots(taken)

    def _dispatch(
        self,
        group: list[str],
        claims: list[Claim],
        slots: Slots,
        deadline: float,
        chunk: _Chunk,
    ) -> bool:
        """Hand each claimed order of ``group`` to a sender with its slot. When the chunk
        must stop first (PAUSED, OUT_OF_TIME, an error), the claims not handed on are
        given back (with OUT_OF_TIME those orders are the report's leftover). Returns
        whether any order had to wait for its rate-limit slot."""
        waited = False
        position = 0
        try:
            for position, (trade_no, (claim, payload)) in enumerate(
                zip(group, claims, strict=True)
            ):
                if not claim.moved:
                    self._not_claimed(trade_no, claim)
                    continue
                slot = self._slot(slots, deadline)
                waited = waited or slot.waited
                if slot.stop is not None:
                    self._give_back(_claimed_from(group, claims, position), slot.stop)
                    chunk.halt.set(slot.stop)
                    if slot.stop is Step.OUT_OF_TIME:
                        chunk.report.leftover += group[position:]
                    return waited
                if self.metrics:
                    self.metrics.limiter_wait("submit", slot.wait)
                order = Dispatch(trade_no, payload or {}, slot.usable_from)
                chunk.in_flight.add(self._pool().submit(self._send, order, chunk.halt, deadline))
        except BaseException:
            self._give_back_after_error(_claimed_from(group, claims, position))
            raise
        return waited

    def _not_claimed(self, trade_no: str, claim: Transition) -> None:
        """Someone else has the order, or it is past submission; a claim whose holder
        is gone is settled by asking the provider."""
        if claim.previous is State.SUBMITTING and self.ledger.stale_claim(
            trade_no, self.claim_lease
        ):
            self.recover(trade_no)

    def _slot(self, slots: Slots, deadline: float) -> _Slot:
        """The next order's slot: one of ``slots``, else one taken (or waited for) now."""
        if time.monotonic() >= deadline:
            return _Slot(stop=Step.OUT_OF_TIME)
        usable_from = slots.take()
        if usable_from is None:
            own = self._slots(1)
            if own is None:
                return _Slot(stop=Step.PAUSED)
            usable_from = own.take()
        if usable_from is not None:
            # A slot taken with others may be due a little later (at most TAKE_AHEAD):
            # the sender waits for it.
            return _Slot(usable_from, wait=max(0.0, usable_from - time.monotonic()))
        try:
            waited = self.limiter.acquire(timeout=max(0.0, deadline - time.monotonic()))
        except RateLimitTimeout:
            return _Slot(waited=True, stop=Step.OUT_OF_TIME)
        # Time has passed since the claim: someone may have paused meanwhile.
        if self.pause.reason() is not None:
            return _Slot(waited=True, stop=Step.PAUSED)
        self.watch.saw_running()
        return _Slot(time.monotonic(), wait=waited, waited=True)

    def _send(self, order: Dispatch, halt: Halt, deadline: float) -> Next:
        """A sender thread's work. The claim is no longer ours once the order's outcome is
        written; an accepted answer is still to be applied, with the next claims, so its
        claim stays held until then (:meth:`_run`)."""
        then: Next | None = None
        try:
            then = self.sender.send(order, halt, deadline)
            return then
        finally:
            if then is None or then.answer is None:
                self._drop([order.trade_no])

    def _drop(self, trade_nos: list[str]) -> None:
        if trade_nos and self.heartbeat is not None:
            self.heartbeat.drop(trade_nos)

    def _collect(self, chunk: _Chunk, *, block: bool) -> None:
        """Record the sends that ended (with ``block``, wait for one at least)."""
        if block and chunk.in_flight:
            done, _ = wait(chunk.in_flight, return_when=FIRST_COMPLETED)
        else:
            done = {sent for sent in chunk.in_flight if sent.done()}
        for sent in done:
            chunk.in_flight.discard(sent)
            try:
                then = sent.result()
            except Exception as exc:  # the sender never raises; a bug in it still halts
                chunk.halt.set(Step.STOPPED, exc)
                continue
            self._record(then, chunk)

    def _record(self, then: Next, chunk: _Chunk) -> None:
        report = chunk.report
        if then.measured is not None and self.metrics:
            seconds, code = then.measured
            self.metrics.submit_latency(seconds)
            self.metrics.provider_response("submit", code)
        if then.answer is not None:
            chunk.answers.append(then.answer)
        match then.step:
            case Step.RETRY:
                # A provider's Retry-After may ask for longer than retries ever wait.
                report.retry.append((then.trade_no, min(then.delay, MAX_DELAY)))
            case Step.QUERY:
                report.query.append(then.trade_no)
            case Step.DONE:
                report.done += 1
            case Step.PAUSED:
                report.paused = True
            case Step.OUT_OF_TIME | Step.STOPPED:
                report.leftover.append(then.trade_no)
            case Step.SKIPPED:
                pass

    def _give_back_after_error(self, trade_nos: list[str]) -> None:
        """Redis or PostgreSQL away mid-group: the claims never handed on go back (if the
        ledger can), and are no longer held either way (their claim lease then ends)."""
        try:
            self._give_back(trade_nos, Step.STOPPED)
        except Exception:
            log.exception("claims left SUBMITTING after an error; their claim lease ends")

    def _give_back(self, trade_nos: list[str], step: Step) -> None:
        """Claims never handed to a sender go back to QUEUED (not POSTed: cancellable)."""
        if trade_nos:
            try:
                self.sender.unclaim(trade_nos, GIVEN_BACK[step])
            finally:
                self._drop(trade_nos)

    def _pool(self) -> ThreadPoolExecutor:
        if self._senders is None:
            self._senders = ThreadPoolExecutor(self.concurrency, thread_name_prefix="submit")
        return self._senders
