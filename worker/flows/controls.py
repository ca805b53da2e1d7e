"""Operator controls, each returning what it did as a value: approve a held batch (after a
balance check), cancel what is unsent, pause and resume submissions cluster-wide."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from worker.coordination.pause import PauseSwitch
from worker.coordination.pause_store import PauseRecord
from worker.core.exceptions import BatchNotFound, ProviderError
from worker.core.states import FINAL_STATES, State
from worker.core.text import plural
from worker.ledger import Ledger
from worker.provider.answers import Balance

HELD_NOTE = "held"


@dataclass(frozen=True)
class ControlResult:
    """What approve or cancel did to a batch: ``moved`` orders, said in ``message``.

    ``held`` is why an approved batch stays held (its balance check did not pass); None
    when the batch was released or nothing in it was held.
    """

    batch_id: str
    moved: int
    message: str
    held: str | None = None
    # Cancel: the orders left to go on to a final state through the provider, because a
    # POST of them may have reached it (tradeNo -> state). Never told "cancelled".
    not_cancelled: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "moved": self.moved,
            "message": self.message,
            "held": self.held,
            "not_cancelled": [
                {"trade_no": trade_no, "state": state}
                for trade_no, state in self.not_cancelled.items()
            ],
        }


@dataclass(frozen=True)
class Paused:
    """Every stop switch now set, by name: ``{"all": reason, "<account>": reason, ...}``,
    and each one's record (who set it, since when). ``already`` is the cluster-wide pause
    that was in force before this call (kept as it was: a second pause replaces no
    reason); None when this call set it."""

    switches: Mapping[str, str]
    records: Mapping[str, PauseRecord] = field(default_factory=dict)
    already: PauseRecord | None = None


@dataclass(frozen=True)
class Resumed:
    """The stop switches that were set (all now cleared), and the QUEUED orders published;
    ``records`` says who had set each, ``by`` who lifted them."""

    was_paused: Mapping[str, str]
    published: int
    records: Mapping[str, PauseRecord] = field(default_factory=dict)
    by: str = "unknown"


class Controls:
    """``pause_switch`` is the cluster-wide switch: ``resume`` clears every account's too."""

    def __init__(
        self,
        ledger: Ledger,
        balance: Callable[[str], Balance],
        publish_submissions: Callable[[Sequence[str]], object],
        pause_switch: PauseSwitch,
        *,
        operator: str = "unknown",
    ) -> None:
        self.operator = operator  # who acts, unless a call names someone
        self.ledger = ledger
        self.balance = balance  # market -> the balance of its provider account
        self.publish_submissions = publish_submissions
        self.pause_switch = pause_switch

    def approve(self, batch_id: str, *, check_balance: bool = True) -> ControlResult:
        """Release a HELD batch, unless the provider balance cannot cover it."""
        summary = self.ledger.batch(batch_id)
        if summary is None:
            raise BatchNotFound(batch_id)
        held = summary.amounts.get(State.HELD, {})
        if not held:
            return ControlResult(batch_id, 0, "nothing is held in this batch")
        if check_balance:
            shortfall = self._shortfall(summary.market, held)
            if shortfall:
                self.ledger.set_batch_note(batch_id, HELD_NOTE, shortfall)
                return ControlResult(batch_id, 0, f"still held: {shortfall}", held=shortfall)
        moved: list[str] = []
        for page in self.ledger.iter_batch(batch_id):
            results = self.ledger.transition_many(
                page, State.QUEUED, source="operator", expect=[State.HELD], note="approved"
            )
            moved += [t for t, r in zip(page, results, strict=True) if r.moved]
        self.ledger.set_batch_note(batch_id, HELD_NOTE, None)
        self.publish_submissions(moved)
        return ControlResult(batch_id, len(moved), f"released {plural(len(moved), 'payout')}")

    def cancel(self, batch_id: str) -> ControlResult:
        """Cancel every order of the batch no POST was ever started for (HELD, or QUEUED
        and never sent). The others go on through the provider: a POST of them may have
        arrived (DESIGN: CANCELLED only for an order never POSTed), and are listed in
        ``not_cancelled``."""
        if self.ledger.batch(batch_id) is None:
            raise BatchNotFound(batch_id)
        cancelled = 0
        kept: dict[str, str] = {}
        for page in self.ledger.iter_batch(batch_id):
            results = self.ledger.cancel_unposted(page, note="cancelled")
            for trade_no, result in zip(page, results, strict=True):
                if result.moved:
                    cancelled += 1
                elif result.previous is not None and result.previous not in FINAL_STATES:
                    kept[trade_no] = str(result.previous)
        message = f"cancelled {plural(cancelled, 'unsent payout')}"
        if kept:
            message += (
                f"; {plural(len(kept), 'payout')} may have reached the provider and "
                f"{'was' if len(kept) == 1 else 'were'} not cancelled (they go on to a final "
                f"state through the provider: `disburse status {batch_id}`)"
            )
        return ControlResult(batch_id, cancelled, message, not_cancelled=kept)

    def pause(self, reason: str, operator: str | None = None) -> Paused:
        """Stop every submission, cluster-wide, within a request's time. Already paused:
        the pause in force stays as it was (``Paused.already``)."""
        record, created = self.pause_switch.pause(reason, who=operator or self.operator)
        records = self.pause_switch.records()
        switches = {scope: r.reason for scope, r in records.items()}
        return Paused(switches, records, None if created else record)

    def resume(self, operator: str | None = None) -> Resumed:
        """Clear every stop switch (also an account's the provider's rejection or the
        circuit breaker set) and publish the QUEUED orders again."""
        by = operator or self.operator
        records = self.pause_switch.records()
        was = {scope: record.reason for scope, record in records.items()}
        self.pause_switch.resume(who=by)
        # Paused workers left their orders QUEUED and dropped the messages: publish again.
        now = self.ledger.now_ms()
        queued = [t for t, _ in self.ledger.scan(State.QUEUED, older_than=0, now_ms=now)]
        self.publish_submissions(queued)
        return Resumed(was, len(queued), records, by)

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
