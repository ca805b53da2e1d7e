"""REVIEW has exits: what waits for a person, and a person's decision, checked first.

An order goes to REVIEW when the automation cannot tell what became of it (pending
past its deadline, no record at the provider after resubmissions). :meth:`Decisions.pending`
lists them with the reason and the provider's last word, both stored on the order.
:meth:`Decisions.resolve` asks the provider again through both of its APIs (the details
API and the status query: worker.core.confirm.Word) and moves the order (source ``operator``;
the operator's name and note in its event) only when the answers agree with the decision:

==============================  ===========  ==========================================
the provider's APIs answer      SUCCEEDED    FAILED
==============================  ===========  ==========================================
one success, no failure         moved        refused
both failed                     refused      moved
one failed, the other not       refused      refused: it may be paid
pending                         refused      refused: it may still be paid
no record (both)                refused      moved once NO_RECORD_GRACE has passed since
                                             the last POST, unless it once accepted the
                                             payout (the order has a provider id)
cannot be asked                 the provider's error; nothing changes
==============================  ===========  ==========================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.core.confirm import Word, refuse_failure
from worker.core.defaults import NO_RECORD_GRACE
from worker.core.exceptions import (
    BatchNotFound,
    DecisionRefused,
    InputError,
    NotInReview,
    OrderNotFound,
)
from worker.core.redact import mask_text
from worker.core.states import State
from worker.ledger import PAGE, Ledger, Order
from worker.ledger.audit import Action

DECISIONS = (State.SUCCEEDED, State.FAILED)


@dataclass(frozen=True)
class Decisions:
    """``ask`` tells what both of the provider's APIs say about an order now and what it
    cost (``Lookups.ask_both`` within the lookup budget); ``grace`` is NO_RECORD_GRACE."""

    ledger: Ledger
    ask: Callable[[Order], Word]
    grace: float = NO_RECORD_GRACE
    origin: str = "api"  # where this process acts from, for the audit trail

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
        write (worker.core.redact): it goes into the order's history.
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
        word = self.ask(order)
        refused = self._refusal(target, order, word)
        if refused is not None:
            raise DecisionRefused(trade_no, target, refused)
        moved = self.ledger.decide(
            trade_no,
            target,
            operator=operator.strip(),
            note=said,
            report=word.report,
            debit=word.debit,
        )
        if not moved.moved:  # a provider report moved it meanwhile
            raise NotInReview(trade_no, str(moved.previous))
        self.ledger.audit(
            Action.RESOLVE,
            operator.strip(),
            self.origin,
            batch_id=order.batch_id,
            trade_no=trade_no,
            note=said,
            facts={"decision": str(target)},
        )
        decided = self.ledger.get(trade_no)
        assert decided is not None
        return decided

    def _refusal(self, target: State, order: Order, word: Word) -> str | None:
        """What the provider said, when it does not agree with ``target``; else None."""
        if target is State.SUCCEEDED:
            return None if word.succeeded else str(word)
        since = None
        if word.no_record:
            last = self.ledger.last_claimed_ms(order.trade_no)
            since = None if last is None else self.ledger.now_ms() - last
        return refuse_failure(order, word, since_last_post_ms=since, grace=self.grace)


def _decision(value: State | str) -> State:
    name = str(value).strip().upper()
    if name not in DECISIONS:
        raise InputError(f"a decision is SUCCEEDED or FAILED, not {value!r}")
    return State(name)
