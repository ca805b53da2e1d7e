"""Operator controls, each returning what it did as a value: cancel what is unsent, pause and
resume submissions cluster-wide (approvals: worker.flows.approvals). Each is a row of the
audit trail."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from worker.coordination.pause import PauseSwitch
from worker.coordination.pause_store import PauseRecord
from worker.core.exceptions import BatchNotFound
from worker.core.states import FINAL_STATES, State
from worker.core.text import plural
from worker.ledger import Ledger
from worker.ledger.audit import Action


@dataclass(frozen=True)
class ControlResult:
    """What approve or cancel did to a batch: ``moved`` orders, said in ``message``.

    ``held`` is why an approved batch stays held (approvals missing, its schedule, the
    balance, the daily limit); None when the batch was released or nothing in it was
    held. ``approvals`` names who approved it, of the ``approvals_needed``.
    """

    batch_id: str
    moved: int
    message: str
    held: str | None = None
    # Cancel: the orders left to go on to a final state through the provider, because a
    # POST of them may have reached it (tradeNo -> state). Never told "cancelled".
    not_cancelled: Mapping[str, str] = field(default_factory=dict)
    approvals_needed: int = 0
    approvals: tuple[str, ...] = ()

    @property
    def approvals_remaining(self) -> int:
        return max(0, self.approvals_needed - len(self.approvals))

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "moved": self.moved,
            "message": self.message,
            "held": self.held,
            "approvals_needed": self.approvals_needed,
            "approvals": list(self.approvals),
            "approvals_remaining": self.approvals_remaining,
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
        publish_submissions: Callable[[Sequence[str]], object],
        pause_switch: PauseSwitch,
        *,
        operator: str = "unknown",
        origin: str = "api",
    ) -> None:
        self.operator = operator  # who acts, unless a call names someone
        self.origin = origin  # where this process acts from, for the audit trail
        self.ledger = ledger
        self.publish_submissions = publish_submissions
        self.pause_switch = pause_switch

    def cancel(self, batch_id: str, operator: str | None = None) -> ControlResult:
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
        self.ledger.audit(
            Action.CANCEL,
            operator or self.operator,
            self.origin,
            batch_id=batch_id,
            facts={"cancelled": cancelled, "not_cancelled": len(kept)},
        )
        return ControlResult(batch_id, cancelled, message, not_cancelled=kept)

    def pause(self, reason: str, operator: str | None = None) -> Paused:
        """Stop every submission, cluster-wide, within a request's time. Already paused:
        the pause in force stays as it was (``Paused.already``)."""
        who = operator or self.operator
        record, created = self.pause_switch.pause(reason, who=who)
        self.ledger.audit(Action.PAUSE, who, self.origin, note=reason, facts={"changed": created})
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
        self.ledger.audit(Action.RESUME, by, self.origin, facts={"was_paused": sorted(was)})
        # Paused workers left their orders QUEUED and dropped the messages: publish again.
        now = self.ledger.now_ms()
        queued = [t for t, _ in self.ledger.scan(State.QUEUED, older_than=0, now_ms=now)]
        self.publish_submissions(queued)
        return Resumed(was, len(queued), records, by)
