"""Lookups: ask the provider about orders and apply the answers.

Each lookup takes a slot of the cluster-wide ``DETAILS_RATE_LIMIT`` per provider call,
asks the details API by the provider's transaction id (``queryPayOutResult`` by our
tradeNo when there is none, or the details API does not know it) and applies the answer
through the ledger (``apply_report``, source ``lookup``):

=====================================  =============================================
success / 0000                         SUCCEEDED
failed / 00029                         FAILED; for an order that may have been sent more
                                       than once (worker.core.confirm), only when the details
                                       API and the status query both say failed (one
                                       says paid: REVIEW; else asked again later)
pending / 0015                         PROCESSING (stays)
no record, UNKNOWN                     asked again; no record again NO_RECORD_GRACE s
                                       later: QUEUED and resubmitted with the same
                                       tradeNo (REVIEW after MAX_NO_RECORD_RESUBMITS)
no record, abandoned claim             its lease expired abandoned_grace s ago or more:
                                       QUEUED and resubmitted at once (same tradeNo);
                                       else asked again at the next check
no record, anything else               unchanged (asked again on the next pass)
a query code not in NOT_FOUND_CODES    unchanged, counted and logged (asked again)
contradicts a final state              discrepancy recorded; the final state stays
error, no token, 429, out of budget    unchanged (asked again later)
=====================================  =============================================

Every answer of the details API also records what the payout cost: its fees and the
total debited. A SUCCEEDED order that someone else reported failed (marked by the
ledger: :meth:`worker.ledger.Ledger.rechecks`) is asked about through the details API
alone, whose answer decides: failed makes it REVERSED; anything else leaves it
SUCCEEDED, the report it contradicts stays recorded as a discrepancy.

An order a lookup leaves pending is held to its REVIEW deadline (worker.flows.deadline).
Lookups run in lookup tasks (published through worker.coordination.inflight by the reconcile pass,
a submit task or the webhook receiver), and in a submit task that finds a claim whose
holder is gone (:meth:`Lookups.recover`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from worker.coordination.inflight import InFlightLookups
from worker.core.confirm import Word, needs_confirmation
from worker.core.defaults import MAX_NO_RECORD_RESUBMITS, NO_RECORD_GRACE
from worker.core.exceptions import (
    AuthenticationFailed,
    MarketUnavailable,
    NotFound,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RateLimitTimeout,
    TokenUnavailable,
)
from worker.core.states import FINAL_STATES, PENDING_STATES, Outcome, State
from worker.flows.deadline import ReviewDeadline
from worker.flows.reads import DetailsReads, Limiter, LookupReport, PayoutQueries
from worker.ledger import Debit, Ledger, Order
from worker.provider.disbursements import Disbursement
from worker.provider.no_details import DetailsNotConfigured
from worker.provider.report import ProviderReport

log = logging.getLogger(__name__)


class _DetailsDown(Exception):
    """The details API cannot be used now (no token; credentials refused)."""


class Lookups:
    """Asks the provider about orders, each through its market's account, and applies
    the answers.

    ``claim_lease``: past it a SUBMITTING order claimed before claim leases existed
    (migration 0011) is abandoned. ``abandoned_grace``: seconds after an abandoned
    claim's lease expired from which "no record" is believed (see :meth:`_not_found`).
    ``recover_budget``: the rate-limit wait allowed to :meth:`recover`.
    ``publish_submissions`` publishes the orders a lookup put back to QUEUED.
    """

    def __init__(
        self,
        ledger: Ledger,
        vexora: Callable[[str], PayoutQueries],
        details: DetailsReads,
        limiter: Limiter,
        in_flight: InFlightLookups,
        deadline: ReviewDeadline,
        *,
        claim_lease: float,
        recover_budget: float,
        publish_submissions: Callable[[Sequence[str]], object],
        abandoned_grace: float,
        no_record_grace: float = NO_RECORD_GRACE,
    ) -> None:
        self.ledger = ledger
        self.vexora = vexora  # market -> the payout API client of its provider account
        self.details = details
        self.limiter = limiter
        self.in_flight = in_flight
        self.deadline = deadline
        self.claim_lease = claim_lease
        self.recover_budget = recover_budget
        self.publish_submissions = publish_submissions
        self.no_record_grace = no_record_grace
        self.abandoned_grace = abandoned_grace

    def run(self, trade_nos: Sequence[str], budget: float) -> LookupReport:
        """Ask the provider about each order in turn, within ``budget`` seconds of waiting.

        Orders the rate limit cannot fit in the budget come back in ``leftover`` (still
        marked as having a lookup outstanding); every other order's marker is cleared,
        so the next pass takes up again whatever is still pending.
        """
        return self._run(trade_nos, budget, clear_in_flight=True)

    def recover(self, trade_no: str) -> LookupReport:
        """Ask the provider about one order now (a claim whose holder is gone).

        Leaves a pass's "lookup outstanding" marker alone: that lookup clears it.
        """
        return self._run([trade_no], self.recover_budget, clear_in_flight=False)

    def ask_both(self, order: Order, budget: float) -> Word:
        """What both of the provider's APIs say about ``order`` now (worker.core.confirm),
        applying nothing: what a retry or a person's decision is checked against. Raises
        a ProviderError when either cannot be asked, RateLimitTimeout past ``budget``."""
        try:
            return self._both(order, time.monotonic() + budget)
        except _DetailsDown as exc:
            assert isinstance(exc.__cause__, ProviderError)
            raise exc.__cause__ from None

    def _both(self, order: Order, deadline: float, platform_trade_no: str | None = None) -> Word:
        """The details API's word (by the stored provider id, else ``platform_trade_no``,
        else the one the status query names; a status it does not document reads as
        pending) and the status query's."""
        ptn = order.platform_trade_no or platform_trade_no
        query: ProviderReport | None = None
        asked = False
        if not ptn:  # the query may name the id to ask the details API by
            query, asked = self._query(order, deadline), True
            ptn = query.platform_trade_no if query is not None else None
        details: ProviderReport | None = None
        debit = None
        if ptn:
            try:
                found = self._details(ptn, deadline)
            except NotFound:
                pass
            else:
                debit = _debit(found)
                details = _report(found, found.state or State.PROCESSING)
        if not asked:
            query = self._query(order, deadline)
        return Word(details, query, debit)

    def _query(self, order: Order, deadline: float) -> ProviderReport | None:
        """The status query's report on the order (None: no record)."""
        self._slot(deadline)
        try:
            return self.vexora(order.market).query(order.trade_no).report
        except NotFound:
            return None

    def _run(
        self, trade_nos: Sequence[str], budget: float, *, clear_in_flight: bool
    ) -> LookupReport:
        deadline = time.monotonic() + budget
        report = LookupReport()
        for index, trade_no in enumerate(trade_nos):
            try:
                self._lookup_one(trade_no, report, deadline)
            except RateLimitTimeout:
                report.leftover = list(trade_nos[index:])
                break
            if clear_in_flight:
                self.in_flight.clear([trade_no])
        if report.requeued:
            self.publish_submissions(report.requeued)
        return report

    def _lookup_one(self, trade_no: str, report: LookupReport, deadline: float) -> None:
        order = self.ledger.get(trade_no)
        if order is None:
            report.count("missing")
            return
        if order.state is State.SUCCEEDED and order.recheck_ms is not None:
            self._recheck(order, report, deadline)
            return
        if order.state not in PENDING_STATES:
            report.count(f"already {order.state}")
            return
        if order.state is State.SUBMITTING and not self.ledger.stale_claim(
            trade_no, self.claim_lease
        ):
            # Claimed again since the pass saw it: that worker is sending it now.
            report.count("claim is live")
            return
        word = None
        try:
            answer, debit = self._ask_provider(order, deadline)
            if answer.state is State.FAILED and needs_confirmation(answer, order):
                word = self._both(order, deadline, answer.platform_trade_no)
        except RateLimitTimeout:
            raise
        except NotFound:
            self._not_found(order, report)
            return
        except _DetailsDown as exc:
            report.deferred += 1
            self._leave(order, report, f"no details API: {exc}")
            return
        except ProviderError as exc:
            self._failed(order, report, exc)
            self._leave(order, report, f"lookup failed: {type(exc).__name__}")
            return
        except MarketUnavailable as exc:
            # Its market's account was removed from the settings since it was sent.
            report.errors += 1
            log.error("lookup not made: %s", exc, extra={"trade_no": trade_no})
            self._leave(order, report, f"not asked: {exc}")
            return
        if word is not None:
            self._confirm_failure(order, word, report)
            return
        self.apply_answer(order, answer, debit, report)

    def _confirm_failure(self, order: Order, word: Word, report: LookupReport) -> None:
        """A failure of an order that may have been sent more than once: final only when
        both APIs say so (worker.core.confirm)."""
        trade_no = order.trade_no
        if word.failed:
            assert word.report is not None
            outcome = self.ledger.apply_report(
                trade_no, word.report, source="lookup", debit=word.debit, confirmed=True
            )
            report.count(f"{order.state}->FAILED confirmed by both APIs: {outcome}")
        elif word.disagree:
            why = f"the provider's APIs disagree: {word}"
            moved = self.ledger.transition(
                trade_no, State.REVIEW, source="lookup", expect=[order.state], reason=why
            )
            if moved.moved:
                report.review.append(trade_no)
                log.error("%s: REVIEW", why, extra={"trade_no": trade_no})
        elif word.succeeded:
            paid = next(r for r in word.reports if r.state is State.SUCCEEDED)
            self.apply_answer(order, paid, word.debit, report)
        else:
            report.count("FAILED not confirmed")
            log.warning(
                "a failure was reported; the provider does not confirm it (%s): asked again",
                word,
                extra={"trade_no": trade_no},
            )
            self._leave(order, report, f"FAILED reported, not confirmed ({word})")

    def apply_details(self, order: Order, found: Disbursement, report: LookupReport) -> None:
        """Apply a details answer about ``order`` that came without a lookup (a row of the
        paged list: worker.flows.walk), as a lookup applies one: its state and its cost."""
        assert found.state is not None
        answer = _report(found, found.state)
        if answer.state is State.FAILED and needs_confirmation(answer, order):
            # One API's word: a lookup asks both (it is not published by this pass).
            self.in_flight.request_lookups([order.trade_no])
            report.count("FAILED to be confirmed by a lookup")
            return
        self.apply_answer(order, answer, _debit(found), report)

    def apply_answer(
        self, order: Order, answer: ProviderReport, debit: Debit | None, report: LookupReport
    ) -> None:
        """Apply what the provider said about ``order`` (and what it cost), and hold it to
        its deadline while it stays pending."""
        trade_no = order.trade_no
        outcome = self.ledger.apply_report(trade_no, answer, source="lookup", debit=debit)
        if outcome is Outcome.MOVED:
            report.count(f"{order.state}->{answer.state}")
        elif outcome is Outcome.DISCREPANCY:
            report.discrepancies += 1
            log.error(
                "provider says %s but the order is final in another state: discrepancy recorded",
                answer.state,
                extra={"trade_no": trade_no},
            )
            return
        else:
            report.count(f"{outcome} {order.state}")
        if answer.state not in FINAL_STATES and outcome in (Outcome.MOVED, Outcome.SAME):
            self._leave(order, report, f"provider says {answer.status or answer.state}")

    def _slot(self, deadline: float) -> None:
        """One slot of the shared details/query budget; RateLimitTimeout past the deadline."""
        self.limiter.acquire(timeout=max(0.0, deadline - time.monotonic()))

    def _failed(self, order: Order, report: LookupReport, exc: ProviderError) -> None:
        """The provider call failed (an error, a 429): counted; asked again later."""
        report.errors += 1
        if isinstance(exc, RateLimited):
            self.limiter.penalize(exc.retry_after or 1.0)
        if isinstance(exc, OutcomeUnknown) and exc.code:
            # A code that is neither an answer nor one of NOT_FOUND_CODES: not "no record".
            report.count(f"code {exc.code[:8]} not known")
            log.warning(
                "the provider answered code %s: neither the payout nor one of "
                "NOT_FOUND_CODES; asked again later",
                exc.code[:8],
                extra={"trade_no": order.trade_no},
            )
            return
        log.warning("lookup failed: %s", type(exc).__name__, extra={"trade_no": order.trade_no})

    def _details(self, platform_trade_no: str, deadline: float) -> Disbursement:
        """The details API's answer about the order (NotFound, or _DetailsDown)."""
        try:
            return self.details.details(platform_trade_no, throttle=lambda: self._slot(deadline))
        except (TokenUnavailable, AuthenticationFailed) as exc:
            # The token cache is in its cluster-wide back-off (worker.provider.token): later
            # details calls fail at once, without a request, until it ends.
            raise _DetailsDown(type(exc).__name__) from exc

    def _ask_provider(self, order: Order, deadline: float) -> tuple[ProviderReport, Debit | None]:
        """The provider's report on the order and, when the details API answered, what the
        payout cost."""
        debit = None
        if order.platform_trade_no:
            try:
                found = self._details(order.platform_trade_no, deadline)
            except NotFound:
                pass  # the details API may lag behind the payout API: ask by tradeNo
            else:
                debit = _debit(found)
                if found.state is not None:
                    return _report(found, found.state), debit
        self._slot(deadline)
        result = self.vexora(order.market).query(order.trade_no)
        return result.report, debit

    def _recheck(self, order: Order, report: LookupReport, deadline: float) -> None:
        """Someone other than the details API reported this SUCCEEDED order failed: the
        details API's answer decides (Ledger.apply_report). The mark stays, for a later
        pass, while the details API cannot answer."""
        assert order.recheck_ms is not None
        found = None
        try:
            if order.platform_trade_no:
                found = self._details(order.platform_trade_no, deadline)
        except DetailsNotConfigured:
            report.deferred += 1  # only the details API confirms it: kept for when it is set
            return
        except NotFound:
            pass
        except _DetailsDown:
            report.deferred += 1
            return
        except ProviderError as exc:
            self._failed(order, report, exc)
            return
        if found is None or found.state is None:
            said = "no record" if found is None else f"status {found.status[:20]!r}"
            report.count(f"reported failed, not confirmed: details API has {said}")
            log.error(
                "a failure was reported after success; the details API has %s: the order "
                "stays SUCCEEDED",
                said,
                extra={"trade_no": order.trade_no},
            )
        else:
            outcome = self.ledger.apply_report(
                order.trade_no, _report(found, found.state), source="lookup", debit=_debit(found)
            )
            if outcome is Outcome.MOVED:
                report.count("SUCCEEDED->REVERSED")
                log.warning(
                    "the details API confirms the payout failed after success: REVERSED",
                    extra={"trade_no": order.trade_no},
                )
            else:
                report.count(f"reported failed, not confirmed: details API says {found.status}")
        self.ledger.recheck_done(order.trade_no, order.recheck_ms)

    def _not_found(self, order: Order, report: LookupReport) -> None:
        """The provider answered without a record of a payout with this tradeNo.

        An order with a provider id was accepted once: it stays as it is. For one whose
        POST may have arrived or not, a single such answer is not believed too soon, as
        the request may still be on its way at the provider:

        - UNKNOWN: the first is noted on the order; one at least ``no_record_grace``
          seconds later resubmits it with the same tradeNo.
        - SUBMITTING, its claim abandoned (its lease expired: worker.flows.heartbeat):
          resubmitted at once when the answer comes ``abandoned_grace`` seconds or more
          after the lease expired (else asked again at the next check). A POST of the
          claim started a renewal interval before its lease expired at the latest (its
          holder starts one only while the lease has that much left:
          ClaimHeartbeat.alive); it reached the provider within its connect timeout, and
          the provider shows a request that arrived within QUERY_DELAY: hence
          ``abandoned_grace`` (Settings.abandoned_claim_grace). A claim
          alive again (renewed late) is never taken: the move requires the lease expired,
          on the row as locked. And were that reasoning wrong (a POST held up longer in
          some proxy), the resubmission still cannot pay twice: it carries the same
          tradeNo, which the provider refuses to pay again (a refusal of a repeat is
          classified UNKNOWN, then queried: worker.flows.submit).

        After ``MAX_NO_RECORD_RESUBMITS`` rounds it goes to REVIEW. Lookups that failed
        (transport, 5xx, 429) never get here: they count for nothing.
        """
        if order.state not in (State.UNKNOWN, State.SUBMITTING) or order.platform_trade_no:
            report.count(f"not found, {order.state} unchanged")
            self._leave(order, report, "provider has no record")
            return
        if order.state is State.SUBMITTING:
            abandoned = self.ledger.abandoned_for(order.trade_no, self.claim_lease)
            if abandoned is None:
                report.count("claim is live")
            elif abandoned < self.abandoned_grace:
                report.count("not found, abandoned claim asked again later")
            else:
                self._resubmit(order, report)
            return
        now = self.ledger.now_ms()
        if order.unseen_ms is None or now - order.unseen_ms < self.no_record_grace * 1000:
            if order.unseen_ms is None:
                self.ledger.note_unseen(order, now)
            report.count(f"not found, {order.state} asked again later")
            self._leave(order, report, "provider has no record")
            return
        self._resubmit(order, report)

    def _resubmit(self, order: Order, report: LookupReport) -> None:
        """No record of the order's POST, believed: QUEUED to be sent again with the same
        tradeNo (REVIEW after MAX_NO_RECORD_RESUBMITS rounds)."""
        if order.resubmits >= MAX_NO_RECORD_RESUBMITS:
            target, why = (
                State.REVIEW,
                f"provider has no record after {order.resubmits} resubmissions",
            )
        else:
            target, why = State.QUEUED, "provider has no record"
        # Only from the state this lookup saw: an order requeued and claimed again by
        # someone else meanwhile (a fresh SUBMITTING) is not pulled back, nor a claim
        # renewed since it was judged abandoned.
        moved = self.ledger.transition(
            order.trade_no,
            target,
            source="lookup",
            expect=[order.state],
            note=why,
            reason=why if target is State.REVIEW else None,
            resubmits=order.resubmits + 1 if target is State.QUEUED else None,
            abandoned_only=order.state is State.SUBMITTING,
        )
        if not moved.moved:
            report.count(f"{moved.outcome} {moved.previous}")
        elif target is State.QUEUED:
            report.requeued.append(order.trade_no)
            report.count(f"{order.state}->QUEUED")
        else:
            report.review.append(order.trade_no)
            log.warning("%s: moved to REVIEW", why, extra={"trade_no": order.trade_no})

    def _leave(self, order: Order, report: LookupReport, why: str) -> None:
        """The order stays pending: past its deadline it goes to REVIEW, with ``why``."""
        if self.deadline.enforce(order, why):
            report.review.append(order.trade_no)


def _report(found: Disbursement, state: State) -> ProviderReport:
    return ProviderReport(state, found.transaction_id, found.status, "")


def _debit(found: Disbursement) -> Debit:
    """What a details answer says the payout cost: its fees summed, in their one currency."""
    return Debit(
        fee=sum(found.fees, Decimal(0)) if found.fees else None,
        fee_currency=found.fee_currency,
        total=found.total_amount,
        total_currency=found.total_currency,
    )
