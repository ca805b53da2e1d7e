"""What the provider must confirm before a failure is final, or a payout is paid again.

FAILED invites a second payment (``disburse retry``, an operator's FAILED), so a failure
is believed on one word only when that word cannot be the provider refusing a repeat:

* :func:`needs_confirmation`: the one rule, for every source (submit answer, webhook,
  lookup, the details list), applied by :meth:`worker.ledger.Ledger.apply_report`. A
  FAILED report for an order that may have been POSTed more than once (a later attempt,
  a resubmission after "no record"), or naming another provider id than the one stored,
  is not final: the order stays pending (SUBMITTING becomes UNKNOWN) and a lookup asks
  both APIs (:class:`Word`); only when both say failed does it become FAILED.
* :func:`refuse_failure`: before a new tradeNo is made for an old payout (a retry) or an
  operator's FAILED decision is applied, both APIs must say failed about the old one, or
  both show no record of a payout the provider never accepted, at least
  ``NO_RECORD_GRACE`` after its last POST.

A report naming another provider id than the stored one sends a pending order to REVIEW
with both ids (the ledger's ``_MOVE``: the stored id is never overwritten).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.core.redact import redact
from worker.core.states import State

if TYPE_CHECKING:
    from worker.ledger import Debit, Order
    from worker.provider.report import ProviderReport

# The reason a retry gets when the payout it retries is reported paid after all.
ORIGINAL_PAID = "the payout it retries was reported paid"


def needs_confirmation(report: ProviderReport, order: Order) -> bool:
    """True when ``report`` may not make ``order`` final on its own word: a failure of an
    order POSTed (maybe) more than once, or naming another provider id than the stored
    one. A repeated tradeNo may be refused as FAILED while the first POST is paid."""
    if report.state is not State.FAILED:
        return False
    if order.attempts > 1 or order.resubmits > 0:
        return True
    stored, named = order.platform_trade_no, report.platform_trade_no
    return bool(stored and named and stored != named)


@dataclass(frozen=True)
class Word:
    """What the provider says about one payout through both of its APIs, now: the
    details API (by the provider id; None: no record, or no id to ask by) and the status
    query (by our tradeNo; None: no record), and what the payout cost (details API)."""

    details: ProviderReport | None
    query: ProviderReport | None
    debit: Debit | None = None

    @property
    def reports(self) -> tuple[ProviderReport, ...]:
        return tuple(r for r in (self.details, self.query) if r is not None)

    @property
    def failed(self) -> bool:
        """Both APIs say the payout failed."""
        return all(r is not None and r.state is State.FAILED for r in (self.details, self.query))

    @property
    def no_record(self) -> bool:
        return self.details is None and self.query is None

    @property
    def succeeded(self) -> bool:
        """One API says paid, and neither says failed."""
        states = {r.state for r in self.reports}
        return State.SUCCEEDED in states and State.FAILED not in states

    @property
    def disagree(self) -> bool:
        """One API says paid, the other failed: a person must look."""
        states = {r.state for r in self.reports}
        return {State.SUCCEEDED, State.FAILED} <= states

    @property
    def report(self) -> ProviderReport | None:
        """The report to record: the details API's, else the query's."""
        return self.details or self.query

    def __str__(self) -> str:
        if self.no_record:
            return "it has no record of the payout"
        return f"details API: {_said(self.details)}; status query: {_said(self.query)}"


def _said(report: ProviderReport | None) -> str:
    if report is None:
        return "no record"
    pending = " (still pending: it may yet be paid)" if report.state is State.PROCESSING else ""
    message = f" {redact(report.message)!r}" if report.message else ""
    return f"{report.state}{pending}, status {report.status or '-'}{message}"


def refuse_failure(
    order: Order, word: Word, *, since_last_post_ms: int | None, grace: float
) -> str | None:
    """Why ``order`` may not be taken as failed now (for a retry under a new tradeNo, or
    an operator's FAILED), in words following "the provider says", or None when the
    provider confirms it: both APIs say failed,
    or both show no record of a payout it never accepted (no provider id) at least
    ``grace`` seconds after its last POST."""
    if word.failed:
        return None
    if word.no_record:
        if order.platform_trade_no:
            return (
                f"it has no record of the payout, though it accepted it as "
                f"{order.platform_trade_no}: ask the provider"
            )
        if since_last_post_ms is not None and since_last_post_ms < grace * 1000:
            return (
                f"it has no record of the payout {since_last_post_ms / 1000:.0f} s after "
                f"its last POST: ask again once NO_RECORD_GRACE ({grace:g} s) has passed"
            )
        return None
    return f"{word}: not failed through both APIs"
