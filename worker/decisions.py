"""REVIEW has exits: what waits for a person, and a person's decision, checked first.

An order goes to REVIEW when the automation cannot tell what became of it (pending
past its deadline, no record at the provider after resubmissions). :meth:`Decisions.pending`
lists them with the reason and the provider's last word, both stored on the order.
:meth:`Decisions.resolve` asks the provider again, the way a lookup asks (worker.lookup),
and moves the order (source ``operator``; the operator's name and note in its event)
only when the answer agrees with the decision:

=========================  ===========  =========================================
the provider answers       SUCCEEDED    FAILED
=========================  ===========  =========================================
success (0000)             moved        refused
failed (00029)             refused      moved
pending (0015)             refused      refused: it may still be paid
no record of the payout    refused      moved, unless it once accepted the payout
                                        (the order has a provider id): refused
cannot be asked            the provider's error; nothing changes
=========================  ===========  =========================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.exceptions import (
    BatchNotFound,
    DecisionRefused,
    InputError,
    NotFound,
    NotInReview,
    OrderNotFound,
)
from worker.ledger import PAGE, Debit, Ledger, Order
from worker.redact import mask_text, redact
from worker.states import State
from worker.vexora import ProviderReport

DECISIONS = (State.SUCCEEDED, State.FAILED)


@dataclass(frozen=True)
class Decisions:
    """``ask`` tells what the provider says about an order now and what it cost
    (``Lookups.ask`` within the lookup budget), raising NotFound when it has no record."""

    ledger: Ledger
    ask: Callable[[Order], tuple[ProviderReport, Debit | None]]

    def pending(self, batch_id: str | None = None) -> list[Order]:
        """The orders in REVIEW (of one batch), the longest waiting first."""
        if batch_id is not None and self.ledger.batch(batch_id) is None:
            raise BatchNotFound(batch_id)
        now = self.ledger.now_ms()
        found = [t for t, _ in self.ledger.scan(State.REVIEW, older_than=0, now_ms=now)]
        orders: list[Order] = []
        for start in range(0, len(found), PAGE):
            orders += [
                order
                for order in self.ledger.get_many(found[start : start + PAGE])
                if order is not None
                and order.state is State.REVIEW
                and batch_id in (None, order.batch_id)
            ]
        return orders

    def resolve(self, trade_no: str, decision: State | str, *, note: str, operator: str) -> Order:
        """Move an order in REVIEW to ``decision`` (SUCCEEDED or FAILED) if the provider
        agrees now; returns the order as it is then.

        Raises OrderNotFound, NotInReview, DecisionRefused (saying what the provider
        said), InputError for a decision or note that is no such thing, and the
        provider's error when it cannot be asked. The note is masked like any text we
        write (worker.redact): it goes into the order's history.
        """
        target = _decision(decision)
        said = mask_text(note.strip())
        if not said:
            raise InputError("a decision needs a note saying what was checked")
        if not operator.strip():
            raise InputError("a decision needs the operator's name")
        order = self.ledger.get(trade_no)
        if order is None:
            raise OrderNotFound(trade_no)
        if order.state is not State.REVIEW:
            raise NotInReview(trade_no, order.state)
        report: ProviderReport | None
        debit: Debit | None = None
        try:
            report, debit = self.ask(order)
        except NotFound:
            report = None
        if not _agrees(target, order, report):
            raise DecisionRefused(trade_no, target, _words(order, report))
        moved = self.ledger.decide(
            trade_no, target, operator=operator.strip(), note=said, report=report, debit=debit
        )
        if not moved.moved:  # a provider report moved it meanwhile
            raise NotInReview(trade_no, str(moved.previous))
        decided = self.ledger.get(trade_no)
        assert decided is not None
        return decided


def _decision(value: State | str) -> State:
    name = str(value).strip().upper()
    if name not in DECISIONS:
        raise InputError(f"a decision is SUCCEEDED or FAILED, not {value!r}")
    return State(name)


def _agrees(target: State, order: Order, report: ProviderReport | None) -> bool:
    if report is None:
        # No record: never paid, unless the provider once accepted it (then ask them).
        return target is State.FAILED and order.platform_trade_no is None
    return report.state is target


def _words(order: Order, report: ProviderReport | None) -> str:
    """What the provider said, for the operator."""
    if report is None:
        if order.platform_trade_no:
            return (
                f"it has no record of the payout, though it accepted it as "
                f"{order.platform_trade_no}: ask the provider"
            )
        return "it has no record of the payout"
    pending = " (still pending: it may yet be paid)" if report.state is State.PROCESSING else ""
    message = f" {redact(report.message)!r}" if report.message else ""
    return f"{report.state}{pending}, status {report.status or '-'}{message}"
