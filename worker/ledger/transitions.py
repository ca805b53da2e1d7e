"""The transition engine: every change of an order's state is one conditional statement
(:data:`worker.ledger.sql.MOVE`), for one order or many, which the transition table
(:data:`worker.states.TRANSITIONS`) decides on the rows as locked."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from psycopg.types.json import Jsonb

from worker.core.states import ALLOWED_FROM, FINAL_STATES, State
from worker.ledger.model import (
    PAYLOAD_KEPT,
    Order,
    Source,
    Transition,
    TransitionOutcome,
    from_ms,
)
from worker.ledger.queries import Queries
from worker.ledger.sql import MOVE

if TYPE_CHECKING:
    from worker.provider.report import ProviderReport

_SUBMITTING = frozenset({State.SUBMITTING})
_UNSENT = frozenset({State.HELD, State.QUEUED})


@dataclass(frozen=True, slots=True)
class Move:
    """One order's change of state, as :data:`worker.ledger.sql.MOVE` makes it."""

    trade_no: str
    target: State
    source: Source
    expect: frozenset[State] = frozenset()  # empty: from any state the table allows
    note: str = ""
    # The target is the provider's word: one contradicting a final state is a discrepancy.
    report: bool = False
    # The provider's ids, status and message, a reason, the resubmissions: stored with it.
    facts: Mapping[str, str | int | None] = field(default_factory=dict)
    # Moves only while the order has had this many attempts (None: any): a decision made
    # on the order as read holds only while no new POST was made since.
    attempts: int | None = None
    # A claim given back (SUBMITTING -> QUEUED) before its POST was started.
    unposted: bool = False
    # Move only an order no POST was ever started for (a cancel).
    unposted_only: bool = False
    # Move only while the order's claim lease is expired (a claim taken from a holder
    # that stopped renewing it: worker.flows.heartbeat).
    abandoned_only: bool = False


def move_row(move: Move) -> dict[str, Any]:
    """A Move as one row of :data:`worker.ledger.sql.MOVE`'s ``want``."""
    target = move.target
    expected = move.expect
    allowed = allowed_from(move)
    discrepant: frozenset[State] = frozenset()
    if move.report and target in FINAL_STATES:
        discrepant = (FINAL_STATES & expected if expected else FINAL_STATES) - {target}
    given = {name: value for name, value in move.facts.items() if value is not None}
    seen = {**given, "note": move.note} if move.note else given
    return {
        "trade_no": move.trade_no,
        "target": str(target),
        "allowed": [str(s) for s in allowed],
        "discrepant": [str(s) for s in discrepant],
        "refresh": bool(given),
        "attempt": target is State.SUBMITTING,  # a claim: one more attempt
        "erase": target in FINAL_STATES - PAYLOAD_KEPT,
        "source": move.source,
        "facts": seen or None,
        "discrepancy": f"{target} {move.source} {move.note}".rstrip(),
        "discrepancy_facts": {**seen, "discrepancy": str(target)},
        **{name: given.get(name) for name in _STORED_FACTS},
        "report": move.report,
        "review_from": [str(s) for s in REVIEW_FROM],
        "attempts": move.attempts,
        "unposted": move.unposted,
        "unposted_only": move.unposted_only,
        "abandoned_only": move.abandoned_only,
    }


# Where a report naming another provider id sends an order, if it is in one of these.
REVIEW_FROM = ALLOWED_FROM[State.REVIEW]


# The facts a move stores on the order itself (the rest only go into its event).
_STORED_FACTS = ("platform_trade_no", "provider_status", "provider_message", "reason", "resubmits")


def report_move(
    trade_no: str, report: ProviderReport, source: Source, *, attempts: int | None = None
) -> Move:
    """The move a provider's report asks for (see :meth:`Ledger.apply_report`)."""
    return Move(
        trade_no,
        report.state,
        source,
        report=True,
        attempts=attempts,
        facts={
            "platform_trade_no": report.platform_trade_no,
            "provider_status": report.status,
            "provider_message": report.message,
        },
    )


def allowed_from(move: Move) -> frozenset[State]:
    """The states ``move`` may take an order from."""
    allowed = ALLOWED_FROM[move.target]
    return allowed & move.expect if move.expect else allowed


def _outcome(before: State, target: State, expect: Collection[State]) -> TransitionOutcome:
    """Why an order in ``before`` did not move to ``target``."""
    if before is target:
        return TransitionOutcome.SAME
    if expect and before not in expect:
        return TransitionOutcome.UNEXPECTED
    if before in FINAL_STATES:
        return TransitionOutcome.FINAL
    return TransitionOutcome.FORBIDDEN


class Transitions(Queries):
    """Orders moved from state to state, each move recorded as an event."""

    def _move(self, moves: Sequence[Move]) -> dict[str, tuple[Transition, dict[str, str] | None]]:
        """One statement making ``moves`` (of distinct orders): each one's Transition and,
        for a claim that moved, the order's fields to send, keyed by tradeNo; unknown
        tradeNos are absent."""
        trade_nos = [move.trade_no for move in moves]
        if len(set(trade_nos)) != len(trade_nos):
            raise ValueError("one statement moves each order at most once")
        params = {
            "moves": orjson.dumps([move_row(move) for move in moves]).decode(),
            "trade_nos": trade_nos,
            "claim_ttl": self.claim_ttl,
        }
        with self._connection() as conn:
            rows = conn.execute(MOVE, params).fetchall()
        wanted = {move.trade_no: move for move in moves}
        result: dict[str, tuple[Transition, dict[str, str] | None]] = {}
        made_final: dict[State, int] = {}
        for trade_no, before, act, payload in rows:
            move = wanted[trade_no]
            previous = State(before)
            if act == "move":
                result[trade_no] = (Transition(TransitionOutcome.OK, previous), payload)
                if move.target in FINAL_STATES:
                    made_final[move.target] = made_final.get(move.target, 0) + 1
            elif act == "discrepancy" and previous in FINAL_STATES:
                result[trade_no] = (Transition(TransitionOutcome.FINAL, previous), None)
            elif act in ("review", "discrepancy"):
                # The report named another provider id (see sql.MOVE): REVIEW, or recorded.
                result[trade_no] = (Transition(TransitionOutcome.OTHER_ID, previous), None)
            else:
                outcome = _outcome(previous, move.target, move.expect)
                if move.unposted_only and previous in allowed_from(move):
                    outcome = (
                        TransitionOutcome.POSTED
                    )  # it could move, but a POST of it may have arrived
                result[trade_no] = (Transition(outcome, previous), None)
        if self.on_final is not None:
            for state, count in made_final.items():
                self.on_final(state, count)
        return result

    def transition(
        self,
        trade_no: str,
        target: State,
        *,
        source: Source,
        expect: Iterable[State] = (),
        note: str = "",
        report: bool = False,
        platform_trade_no: str | None = None,
        provider_status: str | None = None,
        provider_message: str | None = None,
        reason: str | None = None,
        resubmits: int | None = None,
        attempts: int | None = None,
        abandoned_only: bool = False,
    ) -> Transition:
        """Move the order to ``target`` if the table allows it (and it is in ``expect``),
        and, with ``attempts``, only while it has had that many.

        Outcomes: ok, same (already there: the
        facts given are stored), unexpected (not in ``expect``), final (the order is
        final and stays so), forbidden (the table disallows it), missing.
        ``report=True`` says the target comes from the provider: if the order is
        already final in another state, that is recorded as a discrepancy (on the
        order and as an event) and nothing else changes. The provider's ids, status
        code and message, a reason, and the number of resubmissions because the
        provider had no record are stored with the move. ``abandoned_only``: move only
        while the order's claim lease is expired (its holder stopped renewing it).
        """
        move = Move(
            trade_no,
            target,
            source,
            expect=frozenset(expect),
            note=note,
            report=report,
            attempts=attempts,
            abandoned_only=abandoned_only,
            facts={
                "platform_trade_no": platform_trade_no,
                "provider_status": provider_status,
                "provider_message": provider_message,
                "reason": reason,
                "resubmits": resubmits,
            },
        )
        return self._moved(move.trade_no, self._move([move]))

    def transition_many(
        self,
        trade_nos: Sequence[str],
        target: State,
        *,
        source: Source,
        expect: Iterable[State] = (),
        note: str = "",
    ) -> list[Transition]:
        """The same move for many orders, each atomic, all in one statement."""
        expected = frozenset(expect)
        found = self._move([Move(t, target, source, expect=expected, note=note) for t in trade_nos])
        return [self._moved(t, found) for t in trade_nos]

    def give_back(self, trade_nos: Sequence[str], *, why: str, posted: bool) -> list[Transition]:
        """Claims given back: SUBMITTING -> QUEUED. ``posted=False`` says this claim's POST
        was never started (paused, out of time): the order may still be cancelled."""
        moves = [
            Move(t, State.QUEUED, "submit", expect=_SUBMITTING, note=why, unposted=not posted)
            for t in trade_nos
        ]
        found = self._move(moves)
        return [self._moved(t, found) for t in trade_nos]

    def cancel_unposted(self, trade_nos: Sequence[str], *, note: str) -> list[Transition]:
        """HELD or QUEUED -> CANCELLED (source ``operator``) for each order no POST was ever
        started for; one that may have reached the provider stays, its outcome ``posted``."""
        moves = [
            Move(t, State.CANCELLED, "operator", expect=_UNSENT, note=note, unposted_only=True)
            for t in trade_nos
        ]
        found = self._move(moves)
        return [self._moved(t, found) for t in trade_nos]

    @staticmethod
    def _moved(
        trade_no: str, found: Mapping[str, tuple[Transition, dict[str, str] | None]]
    ) -> Transition:
        return (
            found[trade_no][0] if trade_no in found else Transition(TransitionOutcome.MISSING, None)
        )

    def renew_claims(self, trade_nos: Sequence[str]) -> int:
        """Lease the claims of ``trade_nos`` for ``claim_ttl`` s more, from now: one
        statement for the claims a process holds (worker.flows.heartbeat). An order no
        longer SUBMITTING is left alone. Returns how many were renewed."""
        with self._connection() as conn:
            cursor = conn.execute(
                "UPDATE orders SET claim_expires_at = now() + %s * interval '1 second' "
                "WHERE trade_no = ANY(%s) AND state = 'SUBMITTING' AND claim_attempt = attempts",
                (self.claim_ttl, list(trade_nos)),
            )
        return cursor.rowcount

    def note_unseen(self, order: Order, at_ms: int) -> None:
        """Note that a lookup at ``at_ms`` showed no record of ``order``'s latest POST.

        Stored only while the order is in the state it was read in and no later POST
        was made (the next claim clears it); see :attr:`Order.unseen_ms`.
        """
        with self._connection() as conn:
            conn.execute(
                "UPDATE orders SET unseen_at = %s "
                "WHERE trade_no = %s AND state = %s AND attempts = %s",
                (from_ms(at_ms), order.trade_no, str(order.state), order.attempts),
            )

    def restart_queued(self, trade_nos: Sequence[str]) -> list[str]:
        """Restart the QUEUED clock of orders whose message the sweeper publishes again,
        so the next pass does not republish them; returns those still QUEUED."""
        with self._connection() as conn:
            rows = conn.execute(
                "WITH swept AS ("
                "  UPDATE orders SET state_entered_at = now() "
                "  WHERE trade_no = ANY(%s) AND state = 'QUEUED' RETURNING trade_no"
                ") INSERT INTO order_events (trade_no, source, from_state, to_state, facts) "
                "SELECT trade_no, 'sweeper', 'QUEUED', 'QUEUED', %s FROM swept "
                "RETURNING trade_no",
                (list(trade_nos), Jsonb({"note": "republished"})),
            ).fetchall()
        return [trade_no for (trade_no,) in rows]
