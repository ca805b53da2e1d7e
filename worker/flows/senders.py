"""One claimed order's POST, on a sender thread of a submit task: wait for its rate-limit
slot, look at the pause switch once more if the last look is old, POST, and classify
what came back (DESIGN rule 3). A sender that comes to its slot late (LATE_SLOT: a
machine short of CPU, a thread that waited for another's POST) takes a new slot rather
than bunch up with the POSTs sent on time.

The coordinator (worker.flows.submit) claims the orders and takes their slots; a
:class:`Sender` only spends a slot it was given. An accepted answer goes back to the
coordinator, which applies it with its next claims; the rarer failures are written to
the ledger here. Whatever happens, the order leaves with a state: a POST started is
UNKNOWN when nothing else can be said, a claim not POSTed is given back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from redis.client import Pipeline

from worker.coordination.breaker import WHO as BREAKER
from worker.coordination.breaker import Breaker, codes_text
from worker.coordination.pause import PauseSwitch
from worker.coordination.ratelimit import RateLimitTimeout, Slots
from worker.core.backoff import backoff
from worker.core.confirm import needs_confirmation
from worker.core.defaults import LATE_SLOT, MAX_SUBMIT_ATTEMPTS, PAUSE_LOOK_EVERY
from worker.core.exceptions import NotSent, ProviderError, RateLimited, Refused, Rejected
from worker.core.states import State
from worker.ledger import Ledger
from worker.provider.answers import PayoutResult
from worker.provider.report import ProviderReport

log = logging.getLogger(__name__)


class PayoutApi(Protocol):
    """What a submit asks of a payout API client (worker.provider.vexora.VexoraClient)."""

    def submit(self, fields: Mapping[str, str], trade_no: str) -> PayoutResult: ...


class Limiter(Protocol):
    """An account's submit rate limit (worker.coordination.ratelimit.RateLimiter)."""

    def queue_take(self, pipe: Pipeline, count: int) -> None: ...

    def slots(self, reply: Any) -> Slots: ...

    def acquire(self, timeout: float | None = None) -> float: ...

    def penalize(self, seconds: float) -> None: ...


class ClaimHolder(Protocol):
    """Keeps this process's claims alive while it holds them (worker.flows.heartbeat)."""

    def hold(self, trade_nos: Sequence[str]) -> None: ...  # these claims are ours now

    def drop(self, trade_nos: Sequence[str]) -> None: ...  # no longer SUBMITTING by us

    def alive(self, trade_no: str) -> bool: ...  # its lease has a renewal left for certain


class Step(Enum):
    DONE = "done"  # the order has its next state; nothing more to do here
    SKIPPED = "skipped"  # someone else has it, or it is past submission
    PAUSED = "paused"  # submissions are paused: the order stays QUEUED
    RETRY = "retry"  # certainly not sent: back to QUEUED, try again later
    QUERY = "query"  # maybe sent: UNKNOWN, ask the provider later
    OUT_OF_TIME = "out_of_time"  # this task's budget is spent: the order stays QUEUED
    STOPPED = "stopped"  # the chunk stopped on an error: the order stays QUEUED


# Why claims not used are given back (SUBMITTING -> QUEUED).
GIVEN_BACK = {
    Step.PAUSED: "paused",
    Step.OUT_OF_TIME: "the task's budget is spent",
    Step.STOPPED: "the submit task stopped on an error",
}

# The provider's answer to an order's POST, applied to the ledger together with the
# next claims: (tradeNo, report).
Answer = tuple[str, ProviderReport]


@dataclass(frozen=True)
class Next:
    """What comes next for one order after a submit: a step, a delay for RETRY, the
    provider's answer when it is still to be applied, and the POST's (seconds, code)
    for the metrics."""

    trade_no: str
    step: Step
    delay: float = 0.0
    answer: Answer | None = None
    measured: tuple[float, str] | None = None


@dataclass(frozen=True)
class Dispatch:
    """A claimed order handed to a sender: its fields and its slot's time (monotonic)."""

    trade_no: str
    payload: dict[str, str]
    usable_from: float


class Halt:
    """Why a chunk stopped, seen by every sender before it POSTs: the first step set
    wins, and the first unexpected error is kept for the coordinator to raise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.step: Step | None = None
        self.error: BaseException | None = None

    def set(self, step: Step, error: BaseException | None = None) -> None:
        with self._lock:
            if self.step is None:
                self.step = step
            if error is not None and self.error is None:
                self.error = error


class PauseWatch:
    """The pause switch as the submit path looks at it: with every take of slots (by
    the coordinator), and again right before a POST whose last look is older than
    PAUSE_LOOK_EVERY (slow POSTs ahead of it, a slot due later)."""

    def __init__(self, pause: PauseSwitch) -> None:
        self.pause = pause
        # When the switch was last seen off (time.monotonic()); a float is written whole.
        self.seen = 0.0

    def saw_running(self) -> None:
        self.seen = time.monotonic()

    def paused(self) -> bool:
        """True when the switch is on; reads it only when the last look is old."""
        if time.monotonic() - self.seen <= PAUSE_LOOK_EVERY:
            return False
        if self.pause.reason() is not None:
            return True
        self.saw_running()
        return False


class Sender:
    """Sends one claimed order at a time; many threads share one Sender."""

    def __init__(
        self,
        ledger: Ledger,
        client: PayoutApi,
        limiter: Limiter,
        watch: PauseWatch,
        *,
        breaker: Breaker | None,
        systemic_codes: frozenset[str],
        late_slot: float = LATE_SLOT,
        heartbeat: ClaimHolder | None = None,
    ) -> None:
        self.ledger = ledger
        self.late_slot = late_slot
        self.heartbeat = heartbeat
        self.client = client
        self.limiter = limiter
        self.watch = watch
        # First attempts refused one after another pause the account (worker.coordination.breaker).
        self.breaker = breaker
        # Top-level codes that say the account, not the payout, is refused (SYSTEMIC_CODES).
        self.systemic_codes = systemic_codes

    def send(self, order: Dispatch, halt: Halt, deadline: float) -> Next:
        """POST ``order`` on its slot unless the chunk halted, the budget is spent or
        submissions were paused meanwhile; never raises: an unexpected error halts the
        chunk (kept in ``halt``) and leaves the order UNKNOWN (POST started) or QUEUED."""
        posted = False
        try:
            stopped = self._wait_for_slot(order, halt, deadline)
            if stopped is not None:
                return stopped
            posted = True
            then = self._post(order.trade_no, order.payload)
            if then.step is Step.PAUSED:  # a systemic code or the breaker paused the account
                halt.set(Step.PAUSED)
            return then
        except Exception as exc:
            halt.set(Step.STOPPED, exc)
            return self._settle(order.trade_no, exc, posted=posted)

    def _wait_for_slot(self, order: Dispatch, halt: Halt, deadline: float) -> Next | None:
        """None when ``order`` may be POSTed now; else its claim is given back and the
        step says why (the chunk halted, the budget is spent, submissions paused)."""
        early = order.usable_from - time.monotonic()
        if early > 0:
            time.sleep(early)  # a slot taken with others may be due a little later
        renewed = False
        while True:
            if halt.step is not None:
                return self.give_back(order.trade_no, halt.step)
            if time.monotonic() >= deadline:  # waited behind slow POSTs past the budget
                return self.give_back(order.trade_no, Step.OUT_OF_TIME)
            if self.watch.paused():
                halt.set(Step.PAUSED)
                return self.give_back(order.trade_no, Step.PAUSED)
            if renewed or time.monotonic() - order.usable_from <= self.late_slot:
                if self.heartbeat is not None and not self.heartbeat.alive(order.trade_no):
                    # Its lease may run out (renewals failed): a lookup may take the claim
                    # for abandoned, and counts on no POST of it starting later. Left
                    # SUBMITTING, to the lookups.
                    return Next(order.trade_no, Step.SKIPPED)
                return None
            try:  # too late for its slot: a new one (the old one goes unused)
                self.limiter.acquire(timeout=max(0.0, deadline - time.monotonic()))
            except RateLimitTimeout:
                return self.give_back(order.trade_no, Step.OUT_OF_TIME)
            renewed = True  # then the checks again: time has passed

    def give_back(self, trade_no: str, step: Step) -> Next:
        self.unclaim([trade_no], GIVEN_BACK[step])
        return Next(trade_no, step)

    def _settle(self, trade_no: str, error: Exception, *, posted: bool) -> Next:
        """The state of an order whose send failed unexpectedly (a bug, the ledger away)."""
        log.exception(
            "submit failed unexpectedly (%s)", type(error).__name__, extra={"trade_no": trade_no}
        )
        try:
            if not posted:
                return self.give_back(trade_no, Step.STOPPED)
            self.ledger.transition(
                trade_no, State.UNKNOWN, source="submit", note=type(error).__name__
            )
            return Next(trade_no, Step.QUERY)
        except Exception:
            # Still SUBMITTING: its claim lease expires and a lookup settles it.
            log.exception("order left SUBMITTING after an error", extra={"trade_no": trade_no})
            return Next(trade_no, Step.SKIPPED)

    def _post(self, trade_no: str, payload: dict[str, str]) -> Next:
        started = time.monotonic()
        try:
            result = self.client.submit(payload, trade_no)
        except ProviderError as exc:
            then = self._classify_failure(trade_no, exc)
            code = exc.code or type(exc).__name__
            return Next(
                trade_no, then.step, then.delay, measured=(time.monotonic() - started, code)
            )
        measured = (time.monotonic() - started, result.status)
        return Next(trade_no, Step.DONE, answer=(trade_no, result.report), measured=measured)

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
                return Next(trade_no, Step.QUERY)
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
                return Next(trade_no, Step.DONE)
            case _:  # OutcomeUnknown, or anything unforeseen: it may have been sent
                log.warning(
                    "payout outcome unknown (%s), will query",
                    type(error).__name__,
                    extra={"trade_no": trade_no},
                )
                self.ledger.transition(
                    trade_no, State.UNKNOWN, source="submit", note=type(error).__name__
                )
                return Next(trade_no, Step.QUERY)

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
        self.unclaim([trade_no], f"refused {code} on a first attempt", posted=True)
        return Next(trade_no, Step.RETRY, delay)

    def _stop_account(self, trade_no: str, reason: str, *, who: str, level: int) -> Next:
        """Pause this submitter's account (kept in PostgreSQL), say so loudly, and leave
        the order QUEUED for after the fix."""
        pause = self.watch.pause
        scope = pause.account and f"provider account {pause.account}"
        log.log(
            level,
            "PAUSING SUBMISSIONS to %s: %s; payouts stay QUEUED, `disburse resume` after the fix",
            scope or "every provider account",
            reason,
            extra={"trade_no": trade_no},
        )
        pause.pause(reason, who=who)
        self.unclaim([trade_no], reason, posted=True)
        return Next(trade_no, Step.PAUSED)

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
            return Next(trade_no, Step.DONE)
        self.unclaim([trade_no], f"not sent: {why}", posted=True)
        return Next(trade_no, Step.RETRY, delay if delay is not None else backoff(attempts))

    def unclaim(self, trade_nos: Sequence[str], why: str, *, posted: bool = False) -> None:
        """Give the claims back (SUBMITTING -> QUEUED). ``posted``: a POST was started on
        this claim, so the order may have reached the provider and is never cancelled."""
        self.ledger.give_back(trade_nos, why=why, posted=posted)
