"""Enqueue: a batch's orders COPYed in as they come, with the batch, its totals and
their creation events, in one transaction (see :data:`worker.ledger.sql.CREATED`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from itertools import chain, islice, repeat
from typing import TYPE_CHECKING

import orjson
import psycopg

from worker.core.exceptions import AlreadyRetried
from worker.core.policy import beneficiary_key
from worker.core.redact import mask_personal
from worker.core.states import State
from worker.ledger import idempotency
from worker.ledger.approvals import Approvals, BatchTerms
from worker.ledger.model import new_trade_nos
from worker.ledger.sql import COPY_ORDERS, CREATED, ENQUEUE_LOCK

if TYPE_CHECKING:
    from schemas import Payout

# A row of an enqueue: its number, payout, the order it retries, and its new tradeNo.
_Row = tuple[int, "Payout", str | None, str]


def _trade_nos() -> Iterator[str]:
    """New tradeNos for as long as asked, drawn a thousand at a time."""
    while True:
        yield from new_trade_nos(1000)


class Enqueue(Approvals):
    """Batches of orders made, and the batch an idempotency key holds."""

    def create_orders(
        self,
        payouts: Iterable[Payout],
        *,
        batch_id: str,
        market: str,
        hold: bool = False,
        retry_of: Sequence[str] | None = None,
        key: idempotency.BatchKey | None = None,
        terms: BatchTerms | None = None,
    ) -> list[tuple[str, bool]]:
        """Persist ``payouts`` as one batch; returns (tradeNo, created) in input order.

        One transaction: the orders (COPYed in), the batch, its totals and the
        creation events are committed together before this returns. A payout whose
        reference already has an order (from an earlier batch, a concurrent one, or
        an earlier row of this one) is not created again: that order's tradeNo comes
        back with ``created=False``.

        ``payouts`` may be a generator: each payout is COPYed as it comes, so the
        server stores one while the caller makes the next. An exception it raises
        rolls the batch back and propagates.

        ``retry_of`` (one tradeNo per payout) makes each a retry of that FAILED or
        REVERSED order, whose payload is erased in the same transaction: an order is
        retried at most once (AlreadyRetried when another retry of it won a race).

        ``key``, an idempotency key: the batch is stored with it, unless it holds a batch
        already (within its window), which raises idempotency.Duplicate naming that batch
        (IdempotencyKeyReused if of other rows) and stores nothing.

        ``terms``: who created the batch, what holds it, and the policy it is stored under
        (worker.ledger.approvals): a batch not held otherwise is held when it would pass
        the market's daily limit, and rows whose beneficiary would pass its daily limit
        raise OverBeneficiaryLimit naming them (nothing is stored).
        """
        terms = terms or BatchTerms()
        state = State.HELD if hold or terms.held is not None else State.QUEUED
        if hold and not terms.approvals_needed:
            # Held on request: it waits for an approval (the beat releases only a batch
            # whose approvals are complete).
            terms = replace(terms, approvals_needed=1)
        links: Iterable[str | None] = retry_of if retry_of is not None else repeat(None)
        numbered = enumerate(zip(payouts, links, strict=retry_of is not None), 1)
        trade_nos = _trade_nos()
        taken: list[_Row] = []  # (row number, payout, retried tradeNo, new tradeNo)

        def take() -> Iterator[_Row]:
            yield from taken  # those a rolled-back attempt took, then the rest
            for row_no, (payout, link) in numbered:
                taken.append((row_no, payout, link, next(trade_nos)))
                yield taken[-1]

        known: dict[str, str] = {}  # reference -> its order, committed by another enqueue
        while True:
            rows = take()
            try:
                self._create(
                    rows,
                    known,
                    batch_id=batch_id,
                    market=market,
                    state=state,
                    retry_of=retry_of,
                    key=key,
                    terms=terms,
                )
                break
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name == "orders_retry_of_key":
                    raise AlreadyRetried from None
                if exc.diag.constraint_name != "orders_reference_key":
                    raise
                # Rolled back: another enqueue committed one of these references since.
                for _ in rows:  # take the rest too, to look them all up at once
                    pass
                references = [row[1].reference for row in taken if row[1].reference is not None]
                found = self._orders_by_reference(references)
                if found.keys() <= known.keys():
                    raise  # no order committed since the last attempt: nothing to retry for
                known = found
        result: list[tuple[str, bool]] = []
        made: dict[str, str] = {}  # reference -> the order its first row made
        for _, payout, _, trade_no in taken:
            reference = payout.reference
            if reference is None:
                result.append((trade_no, True))
            elif reference in known:
                result.append((known[reference], False))
            elif reference in made:
                result.append((made[reference], False))
            else:
                made[reference] = trade_no
                result.append((trade_no, True))
        return result

    def _create(
        self,
        rows: Iterator[_Row],
        known: Collection[str],
        *,
        batch_id: str,
        market: str,
        state: State,
        retry_of: Sequence[str] | None,
        key: idempotency.BatchKey | None,
        terms: BatchTerms,
    ) -> None:
        """One transaction: ``rows`` as orders (but those of a ``known`` reference or of a
        reference an earlier row has), the batch, its totals and the creation events."""
        policy, since = terms.policy, terms.day_start
        limited = policy is not None and since is not None
        salt = self.beneficiary_salt if limited else None
        first = list(islice(rows, 2))
        made: set[str] = set()  # the references of the orders made
        counts: dict[str, int] = {}  # currency -> orders made
        amounts: dict[str, Decimal] = {}  # currency -> their sum
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            if len(first) > 1 or key is not None or limited:
                # Orders of several references, taken one at a time as they come, could
                # wait on another enqueue's in the opposite order: enqueues of more than
                # one order take turns. (One of a single order holds nothing another
                # waits for while it waits.) A key is looked up and stored in one turn:
                # two enqueues with one key make one batch. A turn may come after another
                # batch's whole COPY: wait for it as long as a statement may last, not the
                # lock_timeout. The policy's limits are checked in a turn too: two
                # batches never both fit in the last of a day's allowance.
                cur.execute(
                    "SELECT set_config('lock_timeout', current_setting('statement_timeout'), true)"
                )
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (ENQUEUE_LOCK,))
            if key is not None:
                idempotency.claim(conn, market, key)
            with cur.copy(COPY_ORDERS) as copy:
                for row_no, payout, link, trade_no in chain(first, rows):
                    reference = payout.reference
                    if reference is not None:
                        if reference in known or reference in made:
                            continue
                        made.add(reference)
                    currency = payout.currency
                    counts[currency] = counts.get(currency, 0) + 1
                    amounts[currency] = amounts.get(currency, Decimal(0)) + payout.amount
                    copy.write_row(
                        (
                            trade_no,
                            batch_id,
                            row_no,
                            payout.market,
                            currency,
                            payout.amount,
                            reference,
                            str(state),
                            orjson.dumps(payout.fields).decode(),
                            orjson.dumps(mask_personal(payout.fields)).decode(),
                            link,
                            beneficiary_key(salt, payout.market, payout.fields) if salt else None,
                        )
                    )
            held = terms.held
            if policy is not None and since is not None:
                self._beneficiaries_over(conn, batch_id, policy, since)
                if state is State.QUEUED:
                    held = self._over_daily(conn, batch_id, market, policy, since)
                    if held is not None:
                        state = State.HELD
                        cur.execute(
                            "UPDATE orders SET state = 'HELD' WHERE batch_id = %s", (batch_id,)
                        )
            cur.execute(
                CREATED,
                {
                    "batch": batch_id,
                    "market": market,
                    "state": str(state),
                    "count": sum(counts.values()),
                    "key": key.key if key is not None else None,
                    "created_by": terms.created_by,
                    "needed": terms.approvals_needed,
                    "not_before": terms.not_before,
                    "held": held,
                    "released": state is State.QUEUED,
                    "digest": key.digest if key is not None else None,
                    "currencies": list(counts),
                    "counts": list(counts.values()),
                    "amounts": list(amounts.values()),
                },
            )
            if retry_of is not None:
                cur.execute(
                    "UPDATE orders SET payload = NULL WHERE trade_no = ANY(%s)", (list(retry_of),)
                )

    def _orders_by_reference(self, references: list[str]) -> dict[str, str]:
        with self._connection() as conn:
            found = conn.execute(
                "SELECT reference, trade_no FROM orders WHERE reference = ANY(%s)", (references,)
            ).fetchall()
        return dict(found)

    def keyed_batch(self, market: str, key: idempotency.BatchKey) -> idempotency.KeyedBatch | None:
        """The batch holding the idempotency ``key`` in ``market`` within its window."""
        with self._connection() as conn:
            return idempotency.find(conn, market, key)
