"""Who may release how much: a new batch's terms under the policy, four-eyes approvals,
and the release of a held batch once nothing holds it (approvals, schedule, balance,
daily limit), by ``approve`` or by the beat.

A batch waits HELD with a reason saying what it waits for: ``needs 2 approvals, 1 given
by alice``, ``scheduled for ...``, the balance, ``daily limit: ...``. Its creator never
approves it, and N approvals are N different people; the last one releases it when
nothing else holds it, else the beat does once the schedule, the balance and the daily
limit allow (worker.ledger.approvals marks the release under the daily limit before
any order moves). Every approval is in the audit trail; ``batch.held``,
``batch.approved`` and ``batch.released`` are in the application's feed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from schemas import Payout, RowError
from worker.core.exceptions import ApprovalRefused, BatchNotFound, ProviderError
from worker.core.policy import (
    MarketPolicy,
    Policy,
    approvals_reason,
    local_day_start,
    scheduled_reason,
)
from worker.core.states import State
from worker.core.text import plural
from worker.flows.controls import ControlResult
from worker.flows.results import RetryResult
from worker.ledger import Ledger
from worker.ledger.approvals import BatchHold, BatchTerms
from worker.ledger.audit import Action
from worker.ledger.model import Source, from_ms
from worker.provider.answers import Balance

log = logging.getLogger(__name__)

REQUIRE_LOGIN = (
    "APPROVALS_REQUIRE_LOGIN is set: approvals are given only through an authenticated "
    "console session, not from a command line or the Python API"
)


@dataclass(frozen=True)
class NewBatch:
    """What the producer knows of a batch before it is stored."""

    market: str
    total: Decimal  # in the market policy's currency
    largest: Decimal
    hold: bool = False
    not_before: datetime | None = None
    created_by: str | None = None

    @classmethod
    def of(
        cls,
        market: str,
        policy: MarketPolicy | None,
        payouts: Iterable[Payout],
        hold: bool,
        not_before: datetime | None,
        created_by: str,
    ) -> NewBatch:
        """The batch of ``payouts``: its total and largest payout count only when its
        market's policy has approval bands (``payouts`` is then a list)."""
        amounts = []
        if policy is not None and policy.approvals:
            assert isinstance(payouts, list | tuple)
            amounts = [p.amount for p in payouts if p.currency == policy.currency]
        total, largest = sum(amounts, Decimal(0)), max(amounts, default=Decimal(0))
        return cls(market, total, largest, hold, not_before, created_by)


def policy_problem(policy: MarketPolicy, payout: Payout) -> str | None:
    """Why the market's policy refuses the payout, or None: over ``max_payout``, or in
    another currency than the policy's amounts (its limits could not be checked)."""
    limited = policy.max_payout or policy.daily_limit or policy.beneficiary_daily_limit
    if limited and payout.currency != policy.currency:
        return (
            f"the policy's limits for {policy.market} are in {policy.currency}: a "
            f"{payout.currency} payout cannot be checked against them"
        )
    return policy.over_max(payout.amount)


def within_policy(
    valid: Iterable[tuple[int, Payout]], errors: list[RowError], policy: MarketPolicy
) -> Iterator[tuple[int, Payout]]:
    """The valid rows the policy allows; a row it refuses is a row error."""
    for row, payout in valid:
        problem = policy_problem(policy, payout)
        if problem is None:
            yield row, payout
        else:
            errors.append(RowError(row, {"amount": [problem]}))


class Approvals:
    """``balance`` gives a market's provider balance; ``now`` the time (the ledger's
    clock by default); ``origin`` where this process acts from, for the audit trail."""

    def __init__(
        self,
        ledger: Ledger,
        balance: Callable[[str], Balance],
        publish_submissions: Callable[[Sequence[str]], object],
        *,
        policy: Policy | None = None,
        operator: str = "unknown",
        origin: str = "api",
        require_login: bool = False,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.balance = balance
        self.publish_submissions = publish_submissions
        self.policy = policy
        self.operator = operator
        self.origin = origin
        self.require_login = require_login
        self.now = now or (lambda: from_ms(ledger.now_ms()))

    def market_policy(self, market: str) -> MarketPolicy | None:
        return self.policy.of(market) if self.policy is not None else None

    def terms(self, batch: NewBatch) -> BatchTerms:
        """The terms a new batch is stored with: the approvals of the highest band it
        meets (at least one when ``hold``), held while they are missing or its time has
        not come; the limits of its market's policy, on the local day of now."""
        policy = self.market_policy(batch.market)
        needed = policy.approvals_needed(batch.total, batch.largest) if policy else 0
        if batch.hold:
            needed = max(needed, 1)
        reasons = [approvals_reason(needed, ())]
        now = self.now()
        if batch.not_before is not None and batch.not_before > now:
            reasons.append(scheduled_reason(batch.not_before))
        held = "; ".join(r for r in reasons if r) or None
        return BatchTerms(
            created_by=batch.created_by,
            approvals_needed=needed,
            not_before=batch.not_before,
            held=held,
            policy=policy,
            day_start=local_day_start(now, policy.zone) if policy else None,
        )

    def stored(self, batch_id: str, who: str) -> tuple[bool, str | None]:
        """After an enqueue: the audit row, and ``batch.held`` when it waits. Whether it
        is held, and why."""
        hold = self.ledger.hold(batch_id)  # its row, not its orders: cheap for any size
        assert hold is not None
        facts = {"market": hold.market, "totals": {c: str(a) for c, a in hold.totals.items()}}
        self.ledger.audit(Action.ENQUEUE, who, self.origin, batch_id=batch_id, facts=facts)
        if hold.released_at is not None:
            return False, None
        reason = hold.held_reason or "held"
        self._batch_event(batch_id, "held", "producer", {"reason": reason})
        return True, hold.held_reason

    def retried(self, batch_id: str, retry: RetryResult, who: str | None) -> None:
        """The audit row of a retry of ``batch_id``: the new batch, what was not retried."""
        facts = {"retry_batch": retry.batch_id, "not_retried": len(retry.not_retried)}
        self.ledger.audit(
            Action.RETRY, who or self.operator, self.origin, batch_id=batch_id, facts=facts
        )

    def approve(
        self,
        batch_id: str,
        *,
        operator: str | None = None,
        note: str | None = None,
        override_limit: bool = False,
        check_balance: bool = True,
        authenticated: bool = False,
        origin: str | None = None,
    ) -> ControlResult:
        """Give ``operator``'s approval (under a policy never the creator's; one per
        person), then release the batch if nothing else holds it. ``override_limit``
        (with a note) lets it past the daily limit. Raises BatchNotFound, ApprovalRefused."""
        who = operator or self.operator
        where = origin or self.origin
        if self.require_login and not authenticated:
            raise ApprovalRefused(REQUIRE_LOGIN)
        hold = self.ledger.hold(batch_id)
        summary = self.ledger.batch(batch_id)
        if hold is None or summary is None:
            raise BatchNotFound(batch_id)
        if not summary.counts.get(State.HELD):
            return self._result(batch_id, 0, "nothing is held in this batch", hold)
        # Without a policy (DISBURSE_POLICY unset) a --hold batch is released as before:
        # by anyone, its creator too.
        if self.policy is not None and who == hold.created_by:
            raise ApprovalRefused(
                f"{who} created batch {batch_id}: another person must approve it (four eyes)"
            )
        complete = len(hold.approvers) >= hold.approvals_needed
        if who in hold.approvers and not complete and not override_limit:
            raise ApprovalRefused(
                f"{who} approved batch {batch_id} already: "
                f"{approvals_reason(hold.approvals_needed, hold.approvers)}; "
                "each approval is another person's"
            )
        if override_limit:
            if not (note or "").strip():
                raise ApprovalRefused("letting a batch past the daily limit needs a note: why")
            self.ledger.override_limit(batch_id, f"{who}: {note}")
            self.ledger.audit(Action.OVERRIDE_LIMIT, who, where, batch_id=batch_id, note=note)
        four_eyes = self.policy is not None
        if who not in hold.approvers and self.ledger.add_approval(
            batch_id, who, four_eyes=four_eyes
        ):
            self.ledger.audit(Action.APPROVE, who, where, batch_id=batch_id, note=note)
            self._batch_event(batch_id, "approved", "operator", {"by": who})
        return self.release(batch_id, check_balance=check_balance)

    def release(
        self, batch_id: str, *, check_balance: bool = True, source: Source = "operator"
    ) -> ControlResult:
        """Release the batch's HELD orders unless something still holds it (then the
        batch's reason says what, and ``held`` too)."""
        hold = self.ledger.hold(batch_id)
        summary = self.ledger.batch(batch_id)
        if hold is None or summary is None:
            raise BatchNotFound(batch_id)
        held = summary.amounts.get(State.HELD, {})
        if not held:
            return self._result(batch_id, 0, "nothing is held in this batch", hold)
        reason = self._waits_for(hold, held, check_balance=check_balance)
        if reason is not None:
            if reason != hold.held_reason:
                self.ledger.set_batch_note(batch_id, "held", reason)
                self._batch_event(batch_id, "held", source, {"reason": reason})
            return self._result(batch_id, 0, f"still held: {reason}", hold, held=reason)
        moved: list[str] = []
        for page in self.ledger.iter_batch(batch_id):
            results = self.ledger.transition_many(
                page, State.QUEUED, source=source, expect=[State.HELD], note="approved"
            )
            moved += [t for t, r in zip(page, results, strict=True) if r.moved]
        self.ledger.set_batch_note(batch_id, "held", None)
        if moved:  # none when the batch was cancelled meanwhile
            self._batch_event(batch_id, "released", source, {"payouts": len(moved)})
        self.publish_submissions(moved)
        return self._result(batch_id, len(moved), f"released {plural(len(moved), 'payout')}", hold)

    def release_due(self) -> int:
        """The beat's turn: release every held batch whose approvals are complete and
        whose schedule, balance and daily limit now allow it; the payouts released."""
        released = 0
        for batch_id in self.ledger.releasable():
            try:
                released += self.release(batch_id, source="reconcile").moved
            except Exception:  # one batch's trouble does not stop the others
                log.exception("releasing batch %s failed; the next beat tries again", batch_id)
        return released

    def record_policy(self) -> None:
        """An audit row for the policy in force, when it is not the one recorded last."""
        if self.policy is None or self.ledger.last_policy_digest() == self.policy.digest:
            return
        facts = {"digest": self.policy.digest, "markets": sorted(self.policy.markets)}
        self.ledger.audit(
            Action.POLICY_LOADED, self.operator, self.origin, note=self.policy.source, facts=facts
        )

    def _batch_event(
        self, batch_id: str, kind: str, source: Source, facts: dict[str, object]
    ) -> None:
        """``batch.<kind>`` in the application's feed, under a policy only: without one
        the feed carries the payouts' events alone, as before."""
        if self.policy is not None:
            self.ledger.batch_event(batch_id, kind, source, facts)

    def _waits_for(
        self, hold: BatchHold, held: dict[str, Decimal], *, check_balance: bool
    ) -> str | None:
        """What holds the batch, cheapest first; None when nothing does (it is then
        marked released: the daily limit counts it)."""
        reasons = [approvals_reason(hold.approvals_needed, hold.approvers)]
        now = self.now()
        if hold.not_before is not None and hold.not_before > now:
            reasons.append(scheduled_reason(hold.not_before))
        found = "; ".join(r for r in reasons if r)
        if found:
            return found
        if check_balance and hold.released_at is None:
            shortfall = self._shortfall(hold.market, held)
            if shortfall:
                return shortfall
        policy = self.market_policy(hold.market)
        since = local_day_start(now, policy.zone) if policy else None
        return self.ledger.claim_release(hold.batch_id, policy, since)

    def _shortfall(self, market: str, held: dict[str, Decimal]) -> str | None:
        """Why the balance of ``market``'s account cannot cover ``held``, or None when it can."""
        if len(held) != 1:
            return None  # one balance, several currencies: the provider decides per payout
        ((currency, needed),) = held.items()
        try:
            available = self.balance(market).available
        except ProviderError as exc:
            return f"could not read the provider balance ({type(exc).__name__}); try again"
        if available < needed:
            return f"balance {available} {currency} does not cover the batch total {needed}"
        return None

    def _result(
        self, batch_id: str, moved: int, message: str, hold: BatchHold, held: str | None = None
    ) -> ControlResult:
        after = self.ledger.hold(batch_id) or hold
        return ControlResult(
            batch_id,
            moved,
            message,
            held=held,
            approvals_needed=after.approvals_needed,
            approvals=tuple(after.approvers),
        )
