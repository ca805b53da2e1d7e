"""What the provider says about orders, applied: the one rule for every source (submit,
webhook, lookup), the submit path's claims that carry its answers to earlier POSTs,
failures held until the provider confirms them, what payouts cost, the reversals left to
the details API, and the operator's decisions on orders in REVIEW."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from psycopg.types.json import Jsonb

from worker.core.confirm import needs_confirmation
from worker.core.states import ALLOWED_FROM, FINAL_STATES, Outcome, State
from worker.ledger.model import (
    PAGE,
    Debit,
    Order,
    Source,
    Transition,
    TransitionOutcome,
    currency_code,
    from_ms,
    to_ms,
)
from worker.ledger.retry_stop import stop_retries
from worker.ledger.transitions import REVIEW_FROM, Move, Transitions, report_move

if TYPE_CHECKING:
    from worker.ledger.facade import Ledger
    from worker.provider.report import ProviderReport

log = logging.getLogger(__name__)

_QUEUED = frozenset({State.QUEUED})
_REVIEW = frozenset({State.REVIEW})
_FAILED_FROM = ALLOWED_FROM[State.FAILED]


class Reports(Transitions):
    """The provider's reports on orders, and the decisions on those in REVIEW."""

    def claim(self, trade_no: str) -> tuple[Transition, dict[str, str] | None]:
        """QUEUED -> SUBMITTING (one more attempt) and the fields to send, in one round
        trip; the fields are None unless this call claimed the order."""
        return self.claim_many([trade_no])[0]

    def claim_many(
        self, trade_nos: Sequence[str], *, answers: Sequence[tuple[str, ProviderReport]] = ()
    ) -> list[tuple[Transition, dict[str, str] | None]]:
        """:meth:`claim` for each of ``trade_nos`` (in that order), and the provider's
        ``answers`` to earlier POSTs (other orders) applied as :meth:`apply_report` does
        for source ``submit``: all in one statement, so one transaction and one commit for
        a group of payouts."""
        # A failure may need the provider's confirmation (worker.confirm), which reads the
        # order first: applied one by one, as apply_report does (they are few).
        failures = [(t, report) for t, report in answers if report.state is State.FAILED]
        answers = [(t, report) for t, report in answers if report.state is not State.FAILED]
        reported = [report_move(trade_no, report, "submit") for trade_no, report in answers]
        claims = [Move(t, State.SUBMITTING, "submit", expect=_QUEUED) for t in trade_nos]
        found = self._move(reported + claims)
        for trade_no, report in answers:
            self._after_report(
                trade_no, report, self._moved(trade_no, found), debit=None, source="submit"
            )
        for trade_no, report in failures:
            self.apply_report(trade_no, report, source="submit")
        result: list[tuple[Transition, dict[str, str] | None]] = []
        for trade_no in trade_nos:
            claimed = self._moved(trade_no, found)
            payload = found[trade_no][1] if claimed.moved else None
            result.append((claimed, dict(payload) if payload is not None else None))
        return result

    def apply_report(
        self,
        trade_no: str,
        report: ProviderReport,
        *,
        source: Source,
        debit: Debit | None = None,
        confirmed: bool = False,
    ) -> Outcome:
        """Apply what the provider said about an order: the one rule for every source.

        ``source`` (submit, webhook, lookup) goes into the order's history. The report
        moves the order when the transition table allows it; a report of a final state
        that contradicts the order's own final state is recorded as a discrepancy and
        never applied; anything else (a late PROCESSING, a report for an unsent order)
        changes nothing.

        ``debit`` comes with the details API's answer, and only with it: what the payout
        cost is recorded, and the details API alone may reverse a payout. Its report of
        a failure moves a SUCCEEDED order to REVERSED. The same report from anyone else
        (a webhook, a query or submit answer: a mistaken or forged one must not move
        money state) is recorded as a discrepancy, and the order is marked for the
        reconcile pass to ask the details API (:meth:`rechecks`).

        A failure that may be the provider refusing a repeat
        (:func:`worker.confirm.needs_confirmation`) is recorded in the order's history and
        not applied, unless ``confirmed`` (both of the provider's APIs said so: a lookup):
        the order stays pending (SUBMITTING becomes UNKNOWN) for a lookup to confirm it
        (UNCONFIRMED). A report naming another provider id than the stored one sends a
        pending order to REVIEW with both ids, the stored one kept (OTHER_ID). A success
        reported for a FAILED order stops its retry (worker.ledger.retry_stop).
        """
        if debit is not None:
            self._record_debit(trade_no, debit)
            if report.state is State.FAILED:
                reversal = self.transition(
                    trade_no,
                    State.REVERSED,
                    source=source,
                    expect=[State.SUCCEEDED],
                    platform_trade_no=report.platform_trade_no,
                    provider_status=report.status,
                    provider_message=report.message,
                    reason="the details API says it failed after success",
                )
                if reversal.outcome in (TransitionOutcome.OK, TransitionOutcome.SAME):
                    return Outcome.MOVED if reversal.moved else Outcome.SAME
        if report.state is State.FAILED and not confirmed:
            return self._apply_failure(trade_no, report, source, debit)
        result = self._moved(trade_no, self._move([report_move(trade_no, report, source)]))
        return self._after_report(trade_no, report, result, debit=debit, source=source)

    def _apply_failure(
        self, trade_no: str, report: ProviderReport, source: Source, debit: Debit | None
    ) -> Outcome:
        """A FAILED report not yet confirmed: final only if the policy says its word is
        enough for the order as read, and no POST was made since (else read again)."""
        result = Transition(TransitionOutcome.MISSING, None)
        for _ in range(3):
            order = self.get(trade_no)
            if order is None:
                return Outcome.MISSING
            stored = order.platform_trade_no
            other_id = bool(stored and report.platform_trade_no not in (None, stored))
            pending = order.state not in FINAL_STATES
            if pending and not other_id and needs_confirmation(report, order):
                return self._unconfirmed(order, report, source)
            move = report_move(trade_no, report, source, attempts=order.attempts)
            result = self._moved(trade_no, self._move([move]))
            raced = (
                result.outcome is TransitionOutcome.FORBIDDEN and result.previous in _FAILED_FROM
            )
            if not raced:
                break
        return self._after_report(trade_no, report, result, debit=debit, source=source)

    def _unconfirmed(self, order: Order, report: ProviderReport, source: Source) -> Outcome:
        """Record a failure the provider must confirm: in the order's history, never as
        its state. A SUBMITTING order becomes UNKNOWN (sent, outcome not known), which the
        reconcile pass looks up; the others stay as they are, pending."""
        facts: dict[str, str | int | None] = {
            "unconfirmed": str(report.state),
            "reported_status": report.status,
            "reported_message": report.message or None,
            "platform_trade_no": report.platform_trade_no,
        }
        note = f"{report.state} to be confirmed with the provider"
        log.warning(
            "%s reports %s for an order that may have been sent more than once: "
            "not final until the provider's APIs confirm it",
            source,
            report.state,
            extra={"trade_no": order.trade_no},
        )
        if order.state is State.SUBMITTING:
            move = Move(
                order.trade_no,
                State.UNKNOWN,
                source,
                expect=frozenset({State.SUBMITTING}),
                note=note,
                attempts=order.attempts,
                facts=facts,
            )
            if self._moved(order.trade_no, self._move([move])).moved:
                return Outcome.UNCONFIRMED
            order = self.get(order.trade_no) or order
        given = {name: value for name, value in facts.items() if value is not None}
        with self._connection() as conn:
            conn.execute(
                "WITH noted AS ("
                "  UPDATE orders SET platform_trade_no = coalesce(platform_trade_no, %(ptn)s) "
                "  WHERE trade_no = %(t)s AND state = %(state)s RETURNING trade_no, state"
                ") INSERT INTO order_events (trade_no, source, from_state, to_state, facts) "
                "SELECT trade_no, %(source)s, state, state, %(facts)s FROM noted",
                {
                    "t": order.trade_no,
                    "state": str(order.state),
                    "ptn": report.platform_trade_no,
                    "source": source,
                    "facts": Jsonb({**given, "note": note}),
                },
            )
        return Outcome.UNCONFIRMED

    def _after_report(
        self,
        trade_no: str,
        report: ProviderReport,
        result: Transition,
        *,
        debit: Debit | None,
        source: Source,
    ) -> Outcome:
        """What applying ``report`` did; a failure reported for a SUCCEEDED order by anyone
        but the details API marks the order for the details API's word."""
        if (
            result.outcome is TransitionOutcome.FINAL
            and result.previous is State.SUCCEEDED
            and report.state is State.FAILED
            and debit is None
        ):
            self._mark_recheck(trade_no)
        if (
            result.outcome is TransitionOutcome.FINAL
            and result.previous is State.FAILED
            and report.state is State.SUCCEEDED
        ):
            # This part is always a Ledger's (worker.ledger.facade), which stop_retries takes.
            stop_retries(cast("Ledger", self), trade_no, source)
        match result.outcome:
            case TransitionOutcome.OK:
                return Outcome.MOVED
            case TransitionOutcome.OTHER_ID:
                log.error(
                    "the provider names another payout id (%s) than the one stored: %s",
                    report.platform_trade_no,
                    "REVIEW" if result.previous in REVIEW_FROM else "recorded",
                    extra={"trade_no": trade_no},
                )
                return Outcome.OTHER_ID
            case TransitionOutcome.SAME:
                return Outcome.SAME
            case TransitionOutcome.MISSING:
                return Outcome.MISSING
            case TransitionOutcome.FINAL if report.state in FINAL_STATES:
                return Outcome.DISCREPANCY
            case _:
                return Outcome.IGNORED

    def _record_debit(self, trade_no: str, debit: Debit) -> None:
        """Store what the details API says the payout cost: each amount with its currency
        (three capitals, as the orders' own), or not at all."""
        fee_currency = currency_code(debit.fee_currency) if debit.fee is not None else None
        total_currency = currency_code(debit.total_currency) if debit.total is not None else None
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET fee = coalesce(%s, fee), fee_currency = coalesce(%s, "
                "fee_currency), total_debited = coalesce(%s, total_debited), "
                "total_debited_currency = coalesce(%s, total_debited_currency) "
                "WHERE trade_no = %s",
                (
                    debit.fee if fee_currency else None,
                    fee_currency,
                    debit.total if total_currency else None,
                    total_currency,
                    trade_no,
                ),
            )

    def _mark_recheck(self, trade_no: str) -> None:
        """A failure was reported for this SUCCEEDED order: ask the details API (again)."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET recheck_at = date_trunc('milliseconds', now()) "
                "WHERE trade_no = %s AND state = 'SUCCEEDED'",
                (trade_no,),
            )

    def rechecks(self, limit: int = PAGE) -> list[tuple[str, int]]:
        """SUCCEEDED orders a failure was reported for, to ask the details API about:
        (tradeNo, when marked in ms), the earliest first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT trade_no, recheck_at FROM orders "
                "WHERE recheck_at IS NOT NULL AND state = 'SUCCEEDED' "
                "ORDER BY recheck_at, trade_no LIMIT %s",
                (limit,),
            ).fetchall()
        return [(trade_no, to_ms(at)) for trade_no, at in rows]

    def recheck_done(self, trade_no: str, marked_ms: int) -> None:
        """The details API was asked about the order after it was marked at ``marked_ms``:
        that mark (and any earlier) is cleared; a failure reported since keeps it."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET recheck_at = NULL WHERE trade_no = %s AND recheck_at <= %s",
                (trade_no, from_ms(marked_ms)),
            )

    # REVIEW decisions, retries, retention (issue 14) ------------------------
    def decide(
        self,
        trade_no: str,
        decision: State,
        *,
        operator: str,
        note: str,
        report: ProviderReport | None,
        debit: Debit | None = None,
    ) -> Transition:
        """REVIEW -> ``decision`` by a person (source ``operator``): the operator's name and
        note go into the event, the provider's answer (None: it has no record) onto the
        order and into the event, with what the payout cost (``debit``, from the details
        API) as every report's."""
        if debit is not None:
            self._record_debit(trade_no, debit)
        facts: dict[str, str | int | None] = {"operator": operator}
        if report is not None:
            facts.update(
                platform_trade_no=report.platform_trade_no,
                provider_status=report.status,
                provider_message=report.message,
            )
        move = Move(trade_no, decision, "operator", expect=_REVIEW, note=note, facts=facts)
        return self._moved(trade_no, self._move([move]))
