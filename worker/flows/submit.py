"""Submitting payouts: claim -> limit -> sign -> POST -> classify.

Orders are claimed in small groups, each group in one statement with the provider's
answers to the group before, then limited, signed, POSTed and classified one by one:
every outcome has a place in the ledger, nothing is sent without a claim, nothing
claimed is left without a state, and a tradeNo is reused on every attempt so the
provider can refuse a repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

from redis.client import Pipeline

from worker.coordination.breaker import WHO as BREAKER
from worker.coordination.breaker import Breaker, codes_text
from worker.coordination.metrics import Metrics
from worker.coordination.pause import PauseSwitch
from worker.coordination.ratelimit import RateLimitTimeout, Slots
from worker.core.backoff import backoff
from worker.core.confirm import needs_confirmation
from worker.core.defaults import MAX_DELAY, MAX_SUBMIT_ATTEMPTS, PAUSE_LOOK_EVERY, SUBMIT_GROUP
from worker.core.exceptions import (
    NotSent,
    ProviderError,
    RateLimited,
    Refused,
    Rejected,
)
from worker.core.settings import DEFAULT_SYSTEMIC_CODES
from worker.core.states import State
from worker.ledger import Ledger, Transition
from worker.provider.answers import PayoutResult
from worker.provider.report import ProviderReport

log = logging.getLogger(__name__)


class PayoutApi(Protocol):
    """What a submit asks of a payout API client (worker.provider.vexora.VexoraClient)."""

    def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult: ...


class ClaimHolder(Protocol):
    """Keeps this process's claims alive while held (worker.flows.heartbeat)."""

    def hold(self, trade_nos: Sequence[str]) -> None: ...

    def drop(self, trade_nos: Sequence[str]) -> None: ...

    def alive(self, trade_no: str) -> bool: ...


class Limiter(Protocol):
    """An account's submit rate limit (worker.coordination.ratelimit.RateLimiter)."""

    def queue_take(self, pipe: Pipeline, count: int) -> None: ...

    def slots(self, reply: Any) -> Slots: ...

    def acquire(self, timeout: float | None = None) -> float: ...

    def penalize(self, seconds: float) -> None: ...


class Step(Enum):
    DONE = "done"  # the order has its next state; nothing more to do here
    SKIPPED = "skipped"  # someone else has it, or it is past submission
    PAUSED = "paused"  # submissions are paused: the order stays QUEUED
    RETRY = "retry"  # certainly not sent: back to QUEUED, try again later
    QUERY = "query"  # maybe sent: UNKNOWN, ask the provider later
    OUT_OF_TIME = "out_of_time"  # this task's budget is spent: the order stays QUEUED


# The provider's answer to an order's POST, applied to the ledger together with the
# next claims: (tradeNo, report).
Answer = tuple[str, ProviderReport]


@dataclass(frozen=True)
class Next:
    """What comes next for one order after a submit: a step, a delay for RETRY, and
    the provider's answer when it is still to be applied (see :meth:`Submitter.submit`)."""

    step: Step
    delay: float = 0.0
    answer: Answer | None = None
    waited: bool = False  # the rate-limit slot was not free at once


# What a claim found, and the fields to send when it claimed the order.
Claim = tuple[Transition, dict[str, str] | None]


# Why claims not used are given back (SUBMITTING -> QUEUED).
_GIVEN_BACK = {Step.PAUSED: "paused", Step.OUT_OF_TIME: "the task's budget is spent"}


def _next_group_size(size: int, waited: bool) -> int:
    """Doubled after a group whose slots were all free at once, else one."""
    return 1 if waited else min(SUBMIT_GROUP, size * 2)


@dataclass
class ChunkReport:
    """What a submit task leaves for later: the task publishes these."""

    retry: list[tuple[str, float]] = field(default_factory=list)
    query: list[str] = field(default_factory=list)
    leftover: list[str] = field(default_factory=list)
    paused: bool = False
    done: int = 0


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
        heartbeat: ClaimHolder | None = None,
    ) -> None:
        self.ledger = ledger
        # Renews the claims from claim to outcome: a killed worker's expire (LEASE_TTL).
        self.heartbeat = heartbeat
        # First attempts refused one after another pause the account (worker.coordination.breaker).
        self.breaker = breaker
        # Top-level codes that say the account, not the payout, is refused (SYSTEMIC_CODES).
        self.systemic_codes = systemic_codes
        self.client = client
        self.limiter = limiter
        self.pause = pause
        self.claim_lease = claim_lease
        # Asks the provider about an order whose claim holder is gone (Lookups.recover):
        # a duplicate delivery never POSTs again.
        self.recover = recover
        self.metrics = metrics
        # When the pause switch was last seen off (time.monotonic()).
        self._pause_seen = 0.0
        # How many orders the next group claims (see SUBMIT_GROUP): carried from one task to the
        # next, so that a run of tasks does not start every chunk at one.
        self._group_size = 1

    def run(self, trade_nos: Sequence[str], budget: float) -> ChunkReport:
        """Submit each order in turn until done, paused, or ``budget`` seconds are spent."""
        try:
            return self._run(trade_nos, time.monotonic() + budget)
        finally:
            if self.metrics:
                self.metrics.flush()

    def _run(self, trade_nos: Sequence[str], deadline: float) -> ChunkReport:
        report = ChunkReport()
        # Each order once: a repeat in one chunk would only be a duplicate delivery.
        orders = list(dict.fromkeys(trade_nos))
        # The provider's answers to the group's POSTs, applied with the next group's claims:
        # one statement, so one commit, per group instead of two per payout.
        answers: list[Answer] = []
        size = self._group_size
        start = 0
        try:
            while start < len(orders):
                if start and time.monotonic() >= deadline:
                    # Checked before each claim, not only in the rate-limit wait: orders
                    # that are skipped, or recovered by a lookup, spend the budget too, and
                    # the task's time limit (and so the claim lease) is derived from it.
                    report.leftover = orders[start:]
                    break
                group = orders[start : start + size]
                slots = self._slots(len(group))
                if slots is None:
                    report.paused = True
                    break
                claims = self.ledger.claim_many(group, answers=answers)
                answers = []
                held = [t for t, (claim, _) in zip(group, claims, strict=True) if claim.moved]
                if self.heartbeat:
                    self.heartbeat.hold(held)
                try:
                    stop, waited = self._send_group(group, claims, slots, deadline, report, answers)
                finally:
                    # Every claim has its next state, or an answer applied with the next
                    # claims (moments from now, well within the lease).
                    if self.heartbeat:
                        self.heartbeat.drop(held)
                size = self._group_size = _next_group_size(size, waited)
                if stop is Step.OUT_OF_TIME:
                    report.leftover += orders[start + len(group) :]
                if stop is not None:
                    break
                start += len(group)
        finally:
            # The last answers: also when the chunk stops early, or on an error after a POST.
            if answers:
                self.ledger.claim_many([], answers=answers)
        return report

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
        self._pause_seen = time.monotonic()
        return Slots() if isinstance(taken, Exception) else self.limiter.slots(taken)

    def _send_group(
        self,
        group: list[str],
        claims: list[Claim],
        slots: Slots,
        deadline: float,
        report: ChunkReport,
        answers: list[Answer],
    ) -> tuple[Step | None, bool]:
        """Send each claimed order of ``group``, recording what comes next in ``report``
        and the answers to apply in ``answers``. Returns the step that stopped the chunk
        (PAUSED or OUT_OF_TIME: the claims not yet used are given back, and with
        OUT_OF_TIME those orders are the report's leftover), and whether any order had to
        wait for its rate-limit slot."""
        waited = False
        for position, (trade_no, (claim, payload)) in enumerate(zip(group, claims, strict=True)):
            then = self.submit(trade_no, claim, payload or {}, slots, deadline)
            waited = waited or then.waited
            if then.answer is not None:
                answers.append(then.answer)
            if then.step in (Step.PAUSED, Step.OUT_OF_TIME):
                rest = zip(group[position + 1 :], claims[position + 1 :], strict=True)
                unused = [t for t, (later, _) in rest if later.moved]
                if unused:
                    self._unclaim(unused, _GIVEN_BACK[then.step])
                if then.step is Step.PAUSED:
                    report.paused = True
                else:
                    report.leftover = group[position:]
                return then.step, waited
            if then.step is Step.RETRY:
                # A provider's Retry-After may ask for longer than retries ever wait.
                report.retry.append((trade_no, min(then.delay, MAX_DELAY)))
            elif then.step is Step.QUERY:
                report.query.append(trade_no)
            elif then.step is Step.DONE:
                report.done += 1
        return None, waited

    def submit(
        self,
        trade_no: str,
        claim: Transition,
        payload: dict[str, str],
        slots: Slots,
        deadline: float,
    ) -> Next:
        """Limit, sign, POST and classify one order its ``claim`` found, on one of
        ``slots`` or, when they are used up, a slot of its own. A provider's acceptance of
        it comes back in ``Next.answer``, for the caller to apply (with the next claims, or
        alone)."""
        if not claim.moved:
            if claim.previous is State.SUBMITTING and self.ledger.stale_claim(
                trade_no, self.claim_lease
            ):
                self.recover(trade_no)
            return Next(Step.SKIPPED)
        if time.monotonic() >= deadline:
            self._unclaim([trade_no], _GIVEN_BACK[Step.OUT_OF_TIME])
            return Next(Step.OUT_OF_TIME)
        usable_from = slots.take()
        if usable_from is None:
            own = self._slots(1)
            if own is None:
                self._unclaim([trade_no], _GIVEN_BACK[Step.PAUSED])
                return Next(Step.PAUSED)
            usable_from = own.take()
        elif time.monotonic() - self._pause_seen > PAUSE_LOOK_EVERY:
            # Slots taken a while ago (slow POSTs): someone may have paused meanwhile.
            if self.pause.reason() is not None:
                self._unclaim([trade_no], _GIVEN_BACK[Step.PAUSED])
                return Next(Step.PAUSED)
            self._pause_seen = time.monotonic()
        if usable_from is None:
            try:
                waited = self.limiter.acquire(timeout=max(0.0, deadline - time.monotonic()))
            except RateLimitTimeout:
                self._unclaim([trade_no], "rate limit wait outlasted the task budget")
                return Next(Step.OUT_OF_TIME, waited=True)
            # Time has passed since the claim: someone may have paused meanwhile.
            if self.pause.reason() is not None:
                self._unclaim([trade_no], _GIVEN_BACK[Step.PAUSED])
                return Next(Step.PAUSED, waited=True)
        else:
            # A slot taken with others may be due a little later (at most TAKE_AHEAD).
            waited = max(0.0, usable_from - time.monotonic())
            if waited:
                time.sleep(waited)
        if self.heartbeat and not self.heartbeat.alive(trade_no):
            # Its lease may run out (renewals failed): a lookup may take the claim for
            # abandoned, and counts on no POST of it starting later. Left to the lookups.
            return Next(Step.SKIPPED)
        if self.metrics:
            self.metrics.limiter_wait("submit", waited)
        then = self._post(trade_no, payload)
        return then if usable_from is not None else replace(then, waited=True)

    def _post(self, trade_no: str, payload: dict[str, str]) -> Next:
        started = time.monotonic()
        try:
            result = self.client.submit(payload, trade_no)
        except ProviderError as exc:
            self._measure(started, exc.code or type(exc).__name__)
            return self._classify_failure(trade_no, exc)
        self._measure(started, result.status)
        return Next(Step.DONE, answer=(trade_no, result.report))

    def _measure(self, started: float, code: str) -> None:
        if self.metrics:
            self.metrics.submit_latency(time.monotonic() - started)
            self.metrics.provider_response("submit", code)

    def _classify_failure(self, trade_no: str, error: ProviderError) -> Next:
        """Where the failure happened decides what the order becomes (DESIGN rule 3)."""
        if isinstance(error, Rejected | Refused) and error.code is not None:
            then = self._refused(trade_no, error, error.code)
            if then is not None:
                return then
        match error:
            case RateLimited(retry_after=retry_after):
                self.limiter.penalize(retry_after or 1.0)
                return self._not_sent(trade_no, "HTTP 429", delay=retry_after)
            case NotSent():
                return self._not_sent(trade_no, type(error).__name__)
            case Rejected(code=code, message=message) if self._may_repeat(trade_no, error):
                # A refusal of a POST that may repeat an earlier one can be the provider
                # refusing the repeat of a payout it has (even paid): never FAILED on
                # that alone. Ask the provider and take its state.
                log.warning(
                    "attempt after the first rejected (code %s), will query",
                    code,
                    extra={"trade_no": trade_no},
                )
                self.ledger.transition(
                    trade_no,
                    State.UNKNOWN,
                    source="submit",
                    note=f"rejected {code} on a repeat attempt",
                    provider_status=code,
                    provider_message=message,
                )
                return Next(Step.QUERY)
            case Rejected(code=code, message=message):
                self.ledger.transition(
                    trade_no,
                    State.FAILED,
                    source="submit",
                    report=True,
                    note="rejected",
                    provider_status=code,
                    provider_message=message,
                )
                return Next(Step.DONE)
            case _:  # OutcomeUnknown, or anything unforeseen: it may have been sent
                log.warning(
                    "payout outcome unknown (%s), will query",
                    type(error).__name__,
                    extra={"trade_no": trade_no},
                )
                self.ledger.transition(
                    trade_no, State.UNKNOWN, source="submit", note=type(error).__name__
                )
                return Next(Step.QUERY)

    def _refused(self, trade_no: str, error: Rejected | Refused, code: str) -> Next | None:
        """A refusal at the top level: a systemic code pauses the account; a first attempt
        counts for the circuit breaker, and is sent again later unless its code is the
        documented final refusal (plain Rejected: FAILED, as before). None: classify it
        as any other failure (a later attempt's refusal is queried)."""
        message = error.message if isinstance(error, Rejected) else str(error)
        if code in self.systemic_codes:
            reason = f"provider rejected our configuration: code {code}: {message}"
            return self._stop_account(trade_no, reason, who="systemic-code", level=logging.CRITICAL)
        if not self._first_attempt(trade_no):
            return None
        breaker = self.breaker
        window = breaker.window if breaker is not None else 0.0
        tripped = breaker.refused(trade_no, code) if breaker is not None else None
        if tripped:
            reason = (
                f"circuit breaker: {sum(tripped.values())} first attempts refused within "
                f"{window:g} s (codes {codes_text(tripped)})"
            )
            return self._stop_account(trade_no, reason, who=BREAKER, level=logging.ERROR)
        if type(error) is Rejected:
            return None  # the documented final refusal: FAILED
        # Refused, but the code is not documented: never FAILED on that alone. Sent again
        # (the same tradeNo) once the breaker has had its window to see whether the whole
        # account is refused.
        delay = max(backoff(1), window)
        log.warning(
            "first attempt refused (code %s), sent again in %.0f s",
            code,
            delay,
            extra={"trade_no": trade_no},
        )
        self._unclaim([trade_no], f"refused {code} on a first attempt", posted=True)
        return Next(Step.RETRY, delay)

    def _stop_account(self, trade_no: str, reason: str, *, who: str, level: int) -> Next:
        """Pause this submitter's account (kept in PostgreSQL), say so loudly, and leave
        the order QUEUED for after the fix."""
        scope = self.pause.account and f"provider account {self.pause.account}"
        log.log(
            level,
            "PAUSING SUBMISSIONS to %s: %s; payouts stay QUEUED, `disburse resume` after the fix",
            scope or "every provider account",
            reason,
            extra={"trade_no": trade_no},
        )
        self.pause.pause(reason, who=who)
        self._unclaim([trade_no], reason, posted=True)
        return Next(Step.PAUSED)

    def _first_attempt(self, trade_no: str) -> bool:
        """True when this POST is the order's first (no earlier claim of it)."""
        order = self.ledger.get(trade_no)
        return order is not None and order.attempts == 1

    def _may_repeat(self, trade_no: str, error: Rejected) -> bool:
        """True when the refusal may be of a repeat (this POST is not the order's first: a
        resubmission, a retry): the rule of worker.core.confirm, as for every FAILED report."""
        order = self.ledger.get(trade_no)
        refusal = ProviderReport(State.FAILED, None, error.code, error.message)
        return order is None or needs_confirmation(refusal, order)

    def _not_sent(self, trade_no: str, why: str, delay: float | None = None) -> Next:
        order = self.ledger.get(trade_no)
        attempts = order.attempts if order else MAX_SUBMIT_ATTEMPTS
        if attempts >= MAX_SUBMIT_ATTEMPTS:
            self.ledger.transition(
                trade_no,
                State.REVIEW,
                source="submit",
                reason=f"not sent after {attempts} attempts: {why}",
            )
            return Next(Step.DONE)
        self._unclaim([trade_no], f"not sent: {why}", posted=True)
        return Next(Step.RETRY, delay if delay is not None else backoff(attempts))

    def _unclaim(self, trade_nos: Sequence[str], why: str, *, posted: bool = False) -> None:
        """Give the claims back (SUBMITTING -> QUEUED). ``posted``: a POST was started on
        this claim, so the order may have reached the provider and is never cancelled."""
        self.ledger.give_back(trade_nos, why=why, posted=posted)
