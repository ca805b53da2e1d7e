"""The order ledger in Redis: the one source of truth for where every payout stands.

Per order: a small hash (kept small so Redis stores it as a compact listpack), the
exact fields to send as one JSON string, and a history list. Per state: a sorted set
of tradeNos scored by the time they entered it (final states are not indexed). Per
batch: a hash of counts and amounts per state, moved atomically with each order, and
the list of its tradeNos in row order. Every change of state is one Lua script run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.client import Pipeline

from worker.config import KEY_PREFIX
from worker.states import FINAL_STATES, SETTLED_STATES, Outcome, State

if TYPE_CHECKING:
    from schemas import Payout
    from worker.vexora import ProviderReport

_HERE = Path(__file__).parent
CREATE_CHUNK = 500
# Hash values over 64 bytes turn Redis's compact listpack into a full hashtable.
_MAX_TEXT = 60
# Facts stored with a transition, by their short hash field names.
_FACT_FIELDS = {
    "platform_trade_no": "ptn",
    "provider_status": "pstatus",
    "provider_message": "pmsg",
    "reason": "reason",
    "unseen": "unseen",
    "resubmits": "resub",
}


def new_trade_no() -> str:
    """32 lowercase hex characters: within the provider's 32-character alphanumeric limit."""
    return uuid.uuid4().hex


def new_batch_id() -> str:
    return "b" + uuid.uuid4().hex[:15]


@dataclass(frozen=True, slots=True)
class Order:
    trade_no: str
    batch_id: str
    market: str
    currency: str
    amount: Decimal
    reference: str | None
    state: State
    created_ms: int
    updated_ms: int
    attempts: int
    platform_trade_no: str | None = None
    provider_status: str | None = None
    provider_message: str | None = None
    reason: str | None = None
    discrepancy: str | None = None
    # When a lookup first showed no record of the payout's latest POST (Redis server ms),
    # and how often it was resubmitted for that: see Lookups._not_found.
    unseen_ms: int | None = None
    resubmits: int = 0
    # Kept by the PostgreSQL ledger (worker/pgledger.py) only.
    row_no: int = 0  # the order's row in its batch
    state_entered_ms: int | None = None
    fee: Decimal | None = None  # from the details API
    total_debited: Decimal | None = None  # from the details API
    masked: Mapping[str, str] | None = None  # the fields sent, masked for display

    @classmethod
    def from_hash(cls, trade_no: str, h: Mapping[str, str]) -> Order:
        attempts = int(h.get("attempts", 0))
        # Stored as "<attempt>:<ms>": a mark left on an earlier POST is no mark.
        unseen_attempt, _, unseen_ms = h.get("unseen", "").partition(":")
        return cls(
            trade_no=trade_no,
            batch_id=h["batch"],
            market=h["market"],
            currency=h["currency"],
            amount=Decimal(h["amount"]),
            reference=h.get("ref") or None,
            state=State(h["state"]),
            created_ms=int(h["created"]),
            updated_ms=int(h["updated"]),
            attempts=attempts,
            platform_trade_no=h.get("ptn") or None,
            provider_status=h.get("pstatus") or None,
            provider_message=h.get("pmsg") or None,
            reason=h.get("reason") or None,
            discrepancy=h.get("discrepancy") or None,
            unseen_ms=int(unseen_ms) if unseen_attempt == str(attempts) else None,
            resubmits=int(h.get("resub") or 0),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """What a transition found: ``moved`` only when this call changed the state."""

    outcome: str  # ok | same | unexpected | forbidden | final | missing
    previous: State | None

    @property
    def moved(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    total: int
    counts: dict[State, int]
    amounts: dict[State, dict[str, Decimal]]
    discrepancies: int
    created_ms: int
    market: str
    held_reason: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def settled_count(self) -> int:
        """Orders no longer on their way: final, or in REVIEW."""
        return sum(n for s, n in self.counts.items() if s in SETTLED_STATES)

    @property
    def settled(self) -> bool:
        """True when no order is still on its way (every one final or in REVIEW)."""
        return self.settled_count == self.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "market": self.market,
            "total": self.total,
            "counts": {str(s): n for s, n in self.counts.items()},
            "amounts": {
                str(s): {cur: str(v) for cur, v in by_cur.items()}
                for s, by_cur in self.amounts.items()
            },
            "discrepancies": self.discrepancies,
            "held_reason": self.held_reason,
        }


class Ledger:
    """Orders, transitions, indexes and batch counts; ``client`` must decode responses."""

    def __init__(self, client: redis.Redis, prefix: str = KEY_PREFIX) -> None:
        self.redis = client
        self.prefix = prefix
        self._create = client.register_script((_HERE / "ledger_create.lua").read_text())
        self._transition = client.register_script((_HERE / "ledger_transition.lua").read_text())

    # keys -------------------------------------------------------------------
    def order_key(self, trade_no: str) -> str:
        return f"{self.prefix}:order:{trade_no}"

    def payload_key(self, trade_no: str) -> str:
        return f"{self.prefix}:payload:{trade_no}"

    def history_key(self, trade_no: str) -> str:
        return f"{self.prefix}:history:{trade_no}"

    def batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def state_key(self, state: State) -> str:
        return f"{self.prefix}:state:{state}"

    # creation ---------------------------------------------------------------
    def create_orders(
        self, payouts: Sequence[Payout], *, batch_id: str, market: str, hold: bool = False
    ) -> list[tuple[str, bool]]:
        """Persist ``payouts`` as one batch; returns (tradeNo, created) in input order.

        A payout whose reference is already known is not created again: its existing
        tradeNo comes back with ``created=False``. Chunks of orders go in one script
        call each, all chunks in one pipelined round trip.
        """
        state = State.HELD if hold else State.QUEUED
        batch_key = self.batch_key(batch_id)
        keys = [
            f"{self.prefix}:refs",
            batch_key,
            f"{batch_key}:orders",
            self.state_key(state),
            f"{self.prefix}:counts",
        ]
        now = self.now_ms()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(batch_key, "market", market)
        pipe.hsetnx(batch_key, "created", now)
        pipe.zadd(f"{self.prefix}:batches", {batch_id: now}, nx=True)
        for start in range(0, len(payouts), CREATE_CHUNK):
            args: list[str] = [self.prefix, batch_id, str(state)]
            for payout in payouts[start : start + CREATE_CHUNK]:
                amount = payout.fields["amount"]
                args += [
                    new_trade_no(),
                    payout.reference or "",
                    payout.market,
                    payout.currency,
                    amount,
                    str(int(Decimal(amount) * 100)),
                    json.dumps(payout.fields, separators=(",", ":"), ensure_ascii=False),
                ]
            self._create(keys=keys, args=args, client=pipe)
        replies = pipe.execute()[3:]
        result: list[tuple[str, bool]] = []
        for reply in replies:
            result += [(reply[i], bool(reply[i + 1])) for i in range(0, len(reply), 2)]
        return result

    # reading ----------------------------------------------------------------
    def get(self, trade_no: str) -> Order | None:
        h = self.redis.hgetall(self.order_key(trade_no))
        return Order.from_hash(trade_no, h) if h else None  # type: ignore[arg-type]

    def get_many(self, trade_nos: Sequence[str]) -> list[Order | None]:
        pipe = self.redis.pipeline(transaction=False)
        for trade_no in trade_nos:
            pipe.hgetall(self.order_key(trade_no))
        return [
            Order.from_hash(t, h) if h else None
            for t, h in zip(trade_nos, pipe.execute(), strict=True)
        ]

    def payload(self, trade_no: str) -> dict[str, str]:
        """The exact fields to send for this order (without tradeNo, timestamp, sign)."""
        return self.payload_reply(trade_no, self.redis.get(self.payload_key(trade_no)))

    def queue_payload(self, pipe: Pipeline, trade_no: str) -> None:
        """Add a :meth:`payload` read to ``pipe``; read its reply with :meth:`payload_reply`."""
        pipe.get(self.payload_key(trade_no))

    @staticmethod
    def payload_reply(trade_no: str, reply: Any) -> dict[str, str]:
        if isinstance(reply, Exception):
            raise reply
        if reply is None:
            raise KeyError(trade_no)
        return dict(json.loads(reply))

    def history(self, trade_no: str) -> list[tuple[int, str]]:
        entries = self.redis.lrange(self.history_key(trade_no), 0, -1)
        return [(int(ms), rest) for ms, rest in (str(e).split(" ", 1) for e in entries)]

    def trade_no_for(self, reference: str) -> str | None:
        value = self.redis.hget(f"{self.prefix}:refs", reference)
        return str(value) if value is not None else None

    def batch(self, batch_id: str) -> BatchSummary | None:
        h: dict[str, str] = self.redis.hgetall(self.batch_key(batch_id))  # type: ignore[assignment]
        if not h:
            return None
        counts: dict[State, int] = {}
        amounts: dict[State, dict[str, Decimal]] = {}
        extra: dict[str, str] = {}
        for key, value in h.items():
            kind, _, rest = key.partition(":")
            if kind == "n" and int(value):
                counts[State(rest)] = int(value)
            elif kind == "c":
                state, _, currency = rest.partition(":")
                if int(value):
                    amounts.setdefault(State(state), {})[currency] = Decimal(value) / 100
            elif kind not in ("total", "discrepancies", "created", "market", "held"):
                extra[key] = value
        return BatchSummary(
            batch_id=batch_id,
            total=int(h.get("total", 0)),
            counts=counts,
            amounts=amounts,
            discrepancies=int(h.get("discrepancies", 0)),
            created_ms=int(h.get("created", 0)),
            market=h.get("market", ""),
            held_reason=h.get("held") or None,
            extra=extra,
        )

    def set_batch_note(self, batch_id: str, name: str, value: str | None) -> None:
        """Store (or with None clear) a note on the batch, such as why it is held."""
        if value is None:
            self.redis.hdel(self.batch_key(batch_id), name)
        else:
            self.redis.hset(self.batch_key(batch_id), name, value)

    def iter_batch(self, batch_id: str, page: int = 1000) -> Iterator[list[str]]:
        """The batch's tradeNos in row order, a page at a time."""
        key = f"{self.batch_key(batch_id)}:orders"
        start = 0
        while True:
            chunk: list[str] = self.redis.lrange(key, start, start + page - 1)  # type: ignore[assignment]
            if not chunk:
                return
            yield chunk
            start += len(chunk)

    def now_ms(self) -> int:
        """The Redis server's clock, which times every state (never the worker's)."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def oldest(
        self,
        state: State,
        *,
        older_than: float = 0.0,
        limit: int = 100,
        offset: int = 0,
        now_ms: int | None = None,
    ) -> list[tuple[str, int]]:
        """Up to ``limit`` (tradeNo, entered ms) in ``state`` for ``older_than`` s, oldest first."""
        cutoff = (now_ms if now_ms is not None else self.now_ms()) - int(older_than * 1000)
        rows = self.redis.zrangebyscore(
            self.state_key(state), "-inf", cutoff, start=offset, num=limit, withscores=True
        )
        return [(str(t), int(score)) for t, score in cast(list[tuple[str, float]], rows)]

    def entered_ms(self, trade_no: str, state: State) -> int | None:
        """When the order entered ``state`` (if it is in that indexed state now)."""
        score = self.redis.zscore(self.state_key(state), trade_no)
        return int(score) if score is not None else None

    def stale_claim(self, trade_no: str, lease: float) -> bool:
        """True when the order is SUBMITTING and was claimed more than ``lease`` s ago:
        its worker is certainly gone (killed at its time limit, if not before)."""
        claimed = self.entered_ms(trade_no, State.SUBMITTING)
        if claimed is None:
            return False
        return self.now_ms() - claimed > lease * 1000

    def state_counts(self) -> dict[State, int]:
        """Orders per state across every batch, kept by the same scripts that move them."""
        counts = self.redis.hgetall(f"{self.prefix}:counts")
        return {State(str(k)): int(v) for k, v in counts.items() if int(v)}

    def count(self, state: State) -> int:
        return int(self.redis.zcard(self.state_key(state)))

    def discrepancies(self, limit: int = 100) -> list[str]:
        return list(self.redis.zrevrange(f"{self.prefix}:discrepancies", 0, limit - 1))  # type: ignore[arg-type]

    # transitions ------------------------------------------------------------
    def _transition_args(
        self,
        trade_no: str,
        target: State,
        expect: Iterable[State],
        note: str,
        report: bool,
        facts: Mapping[str, str | int | None],
    ) -> tuple[list[str], list[str]]:
        args = [
            self.prefix,
            trade_no,
            str(target),
            ",".join(str(s) for s in expect),
            note[:_MAX_TEXT],
            "1" if report else "0",
        ]
        for name, value in facts.items():
            if value is not None:
                args += [_FACT_FIELDS[name], str(value)[:_MAX_TEXT]]
        return [self.order_key(trade_no), self.history_key(trade_no)], args

    def transition(
        self,
        trade_no: str,
        target: State,
        *,
        expect: Iterable[State] = (),
        note: str = "",
        report: bool = False,
        platform_trade_no: str | None = None,
        provider_status: str | None = None,
        provider_message: str | None = None,
        reason: str | None = None,
        resubmits: int | None = None,
    ) -> Transition:
        """Move the order to ``target`` if the table allows it (and it is in ``expect``).

        ``report=True`` says the target comes from the provider: if the order is already
        final in another state, that is recorded as a discrepancy and nothing changes.
        The provider's ids, status code and message, a reason, and the number of
        resubmissions because the provider had no record are stored with it.
        """
        facts = {
            "platform_trade_no": platform_trade_no,
            "provider_status": provider_status,
            "provider_message": provider_message,
            "reason": reason,
            "resubmits": resubmits,
        }
        keys, args = self._transition_args(trade_no, target, expect, note, report, facts)
        return self.transition_reply(self._transition(keys=keys, args=args))

    def note_unseen(self, order: Order, at_ms: int) -> None:
        """Note that a lookup at ``at_ms`` showed no record of ``order``'s latest POST.

        Stored only while the order is in the state it was read in (the transition
        script's ``same`` outcome), and read back only while no later POST was made
        (see :attr:`Order.unseen_ms`).
        """
        facts = {"unseen": f"{order.attempts}:{at_ms}"}
        keys, args = self._transition_args(
            order.trade_no, order.state, [order.state], "", False, facts
        )
        self.transition_reply(self._transition(keys=keys, args=args))

    def apply_report(self, trade_no: str, report: ProviderReport, *, source: str) -> Outcome:
        """Apply what the provider said about an order: the one rule for every source.

        ``source`` (submit, webhook, lookup) goes into the order's history. The report
        moves the order when the transition table allows it; a report of a final state
        that contradicts the order's own final state is recorded as a discrepancy and
        never applied; anything else (a late PROCESSING, a report for an unsent order)
        changes nothing.
        """
        result = self.transition(
            trade_no,
            report.state,
            report=True,
            note=source,
            platform_trade_no=report.platform_trade_no,
            provider_status=report.status,
            provider_message=report.message,
        )
        match result.outcome:
            case "ok":
                return Outcome.MOVED
            case "same":
                return Outcome.SAME
            case "missing":
                return Outcome.MISSING
            case "final" if report.state in FINAL_STATES:
                return Outcome.DISCREPANCY
            case _:
                return Outcome.IGNORED

    def queue_transition(
        self,
        pipe: Pipeline,
        trade_no: str,
        target: State,
        *,
        expect: Iterable[State] = (),
        note: str = "",
    ) -> None:
        """Add a :meth:`transition` to ``pipe``; read its reply with :meth:`transition_reply`.

        A plain EVALSHA (see ``RateLimiter.queue_try``): if the server lost its script
        cache, the reply is a ``NoScriptError`` and the order did not move; call
        :meth:`load_scripts` and try again.
        """
        keys, args = self._transition_args(trade_no, target, expect, note, False, {})
        pipe.evalsha(self._transition.sha, len(keys), *keys, *args)

    @staticmethod
    def transition_reply(reply: Any) -> Transition:
        if isinstance(reply, Exception):
            raise reply
        outcome, previous = reply
        return Transition(str(outcome), State(previous) if previous else None)

    def load_scripts(self) -> None:
        """Put the ledger's scripts in the server's cache (after a restart flushed it)."""
        for script in (self._create, self._transition):
            self.redis.script_load(script.script)

    def transition_many(
        self,
        trade_nos: Sequence[str],
        target: State,
        *,
        expect: Iterable[State] = (),
        note: str = "",
    ) -> list[Transition]:
        """The same move for many orders, each atomic, in one pipelined round trip."""
        expect = tuple(expect)
        pipe = self.redis.pipeline(transaction=False)
        for trade_no in trade_nos:
            keys, args = self._transition_args(trade_no, target, expect, note, False, {})
            self._transition(keys=keys, args=args, client=pipe)
        return [self.transition_reply(reply) for reply in pipe.execute()]
