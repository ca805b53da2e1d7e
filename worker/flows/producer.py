"""Accepting payouts: validate every row -> persist in the ledger -> publish.

Nothing is committed or published unless every row is valid (or the caller asks to
skip invalid rows). Rows go into the ledger's open transaction as they are validated,
so that PostgreSQL stores one while Python checks the next; a bad row rolls it back.
Orders are committed before their messages are published, so a message can be lost
(the sweeper republishes) but never point at a payout that is not recorded.

A retry enqueues a batch's FAILED orders again the same way, from the fields they kept
(worker.flows.retention), as a new batch of new tradeNos, each linked to the order it retries
(``Order.retry_of``). Its reference is the original's with
``#retry<n>`` appended (``inv-7`` -> ``inv-7#retry1``, whose retry is ``inv-7#retry2``):
``#`` is in no reference an application can give, so a retry's reference maps to
exactly one order too. An order is retried at most once (the database holds the
link unique): retrying a batch again enqueues only what has not been retried. A REVERSED
order lost its fields when it succeeded (a paid payout keeps no personal data): the retry
names it as not retried, for the application to enqueue again from its own records.

A new tradeNo for an old payout is made only once the provider confirms the old one
failed (worker.core.confirm.refuse_failure): both of its APIs are asked about each order
first, and one they do not confirm (paid, pending, another word, no record too soon after
its last POST, or the provider cannot be asked) is not retried: ``refused``, with what the
provider said.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from marshmallow import ValidationError

from schemas import (
    MARKETS,
    Payout,
    RowError,
    iter_valid,
    market_code,
    validate_row,
    validate_rows,
)
from worker.core.columns import notify_url_error
from worker.core.confirm import Word, refuse_failure
from worker.core.exceptions import (
    BatchNotFound,
    ConfigError,
    InvalidPayout,
    ProviderError,
    RateLimitTimeout,
    UnknownMarket,
)
from worker.core.redact import mask_text
from worker.core.settings import Settings
from worker.core.states import State
from worker.flows.approvals import Approvals, NewBatch, policy_problem, within_policy
from worker.flows.results import BatchResult, RetryResult
from worker.ledger import Ledger, Order, new_batch_id, new_trade_no
from worker.ledger.approvals import OverBeneficiaryLimit
from worker.ledger.idempotency import BatchKey, Duplicate, KeyedBatch, batch_key, check

log = logging.getLogger(__name__)

# Publishes submit messages for orders (worker.celery.publish.Publisher.submissions).
Publish = Callable[[Sequence[str]], object]
# Signs one payout's fields with a tradeNo exactly as a worker would
# (VexoraClient.signed_body of the market's account).
Sign = Callable[[Mapping[str, str], str], object]
# What both of the provider's APIs say about an order now (Lookups.ask_both).
Ask = Callable[[Order], Word]

_RETRY_SUFFIX = re.compile(r"#retry([0-9]+)$")
# Why an order cannot be retried without its fields, by its state: a FAILED one kept them
# for FAILED_PAYLOAD_RETENTION; a REVERSED one lost them on success (ledger.PAYLOAD_KEPT).
_ERASED = {
    State.FAILED: "its fields are erased (past FAILED_PAYLOAD_RETENTION)",
    State.REVERSED: (
        "its fields were erased when it succeeded; "
        "enqueue it again from your records under a new reference"
    ),
}


class Producer:
    """``sign`` gives the signer of a market's account, for dry runs; ``ask`` what the
    provider says about an order, for retries (without it nothing is retried)."""

    def __init__(
        self,
        ledger: Ledger,
        settings: Settings,
        *,
        publish: Publish,
        sign: Callable[[str], Sign],
        ask: Ask | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.publish = publish
        self.sign = sign
        self.ask = ask
        # The policy (limits, approvals, schedules) and the audit trail; without it a
        # batch is held only when asked (``hold``), and nothing is audited.
        self.approvals = approvals

    def enqueue_batch(
        self,
        market: str,
        rows: Iterable[tuple[int, Mapping[str, Any]]],
        *,
        skip_invalid: bool = False,
        hold: bool = False,
        dry_run: bool = False,
        parse_errors: Iterable[RowError] = (),
        idempotency_key: str | None = None,
        operator: str | None = None,
        not_before: datetime | None = None,
    ) -> BatchResult:
        """Validate all rows; unless every one is valid (or ``skip_invalid``), enqueue none.

        With an ``idempotency_key`` given to a batch of the same rows within
        IDEMPOTENCY_WINDOW, that batch is returned (``duplicate_of``) and nothing is
        stored or sent (worker.ledger.idempotency). A dry run records no key.

        Raises UnknownMarket for a market code we do not pay out in, MarketUnavailable
        for a market without a provider account, ConfigError when rows without a
        notifyUrl would be sent the NOTIFY_URL setting and this market refuses it (JP
        and KH notify over HTTPS only), IdempotencyKeyReused when the key was given to
        other rows.

        Under a policy (worker.flows.approvals) a row over its market's ``max_payout``, or
        whose beneficiary would pass its daily limit, is a row error; the batch is held
        while it needs approvals, waits for ``not_before``, or would pass the daily limit.
        ``operator`` (else the settings') is its ``created_by``.
        """
        market = _market(market)
        self.settings.account(market)  # MarketUnavailable: refused before anything is stored
        rows = list(rows)
        key = None
        if idempotency_key is not None and not dry_run:
            window = self.settings.idempotency_window
            key = batch_key(idempotency_key, market, [row for _, row in rows], window)
            found = self.ledger.keyed_batch(market, key)
            if found is not None:  # (checked again when the batch is stored)
                check(found, key)
                return self._duplicate(found)
        self._check_notify_url(market, [row for _, row in rows])
        errors = list(parse_errors)
        valid = iter_valid(market, rows, errors, notify_url=self.settings.notify_url)
        policy = self.approvals.market_policy(market) if self.approvals else None
        if policy is not None:
            valid = within_policy(valid, errors, policy)
        if dry_run:
            payouts = [payout for _, payout in valid]
            errors.sort(key=lambda e: e.row)
            if (errors and not skip_invalid) or not payouts:
                return BatchResult(None, 0, errors)
            self._sign_all(market.upper(), payouts)
            return BatchResult(None, len(payouts), errors, dry_run=True)
        try:
            # Stored as they are validated: the ledger's server works while the rows are
            # checked, and the transaction commits only if the batch is to be enqueued.
            numbers: list[int] = []  # the input row of each payout taken, in order
            taken: Iterable[Payout] = _enqueued(valid, errors, skip_invalid, numbers)
            if policy is not None and (
                policy.approvals or (policy.beneficiary_daily_limit and skip_invalid)
            ):
                # Its band needs the batch's total; rows over a beneficiary's limit are
                # taken out and the rest stored again (skip_invalid).
                taken = list(taken)
            who = operator or self.settings.operator
            while True:
                new = NewBatch.of(market, policy, taken, hold, not_before, who)
                try:
                    return self._persist(market, taken, errors, new=new, key=key)
                except OverBeneficiaryLimit as over:
                    errors += [
                        RowError(numbers[i - 1], {"amount": [why]}) for i, why in over.rows.items()
                    ]
                    kept = [i for i in range(len(numbers)) if i + 1 not in over.rows]
                    if not skip_invalid or not kept:
                        raise _Rejected from None
                    payouts = list(taken)  # a list already: skip_invalid made it one
                    taken = [payouts[i] for i in kept]
                    numbers[:] = [numbers[i] for i in kept]
        except _Rejected:
            return BatchResult(None, 0, sorted(errors, key=lambda e: e.row))
        except Duplicate as duplicate:  # another enqueue with the key committed meanwhile
            return self._duplicate(duplicate.batch)

    def _duplicate(self, found: KeyedBatch) -> BatchResult:
        log.info("idempotency key of batch %s given again: nothing enqueued", found.batch_id)
        trade_nos = [t for page in self.ledger.iter_batch(found.batch_id) for t in page]
        return BatchResult(
            found.batch_id,
            found.accepted,
            trade_nos=trade_nos,
            duplicate_of=found.batch_id,
            duplicate_at_ms=found.created_ms,
        )

    def retry(
        self, batch_id: str, *, hold: bool = False, operator: str | None = None
    ) -> RetryResult:
        """Enqueue the batch's FAILED and REVERSED orders again as a new batch.

        Each still has its fields (FAILED_PAYLOAD_RETENTION) and no retry yet; the others
        are in ``not_retried`` with the reason, and in ``erased`` when their fields are
        gone (a REVERSED order's went when it succeeded). The fields are validated as rows are (an
        error names the order's row in ``batch_id``): unless every one is valid, nothing
        is enqueued. Raises BatchNotFound. The retry is in the audit trail, as ``operator``'s.
        """
        result = self._retry(batch_id, hold=hold, operator=operator)
        if self.approvals is not None:
            self.approvals.retried(batch_id, result, operator)
        return result

    def _retry(self, batch_id: str, *, hold: bool, operator: str | None) -> RetryResult:
        candidates = self.ledger.retry_candidates(batch_id)
        if not candidates and self.ledger.batch(batch_id) is None:
            raise BatchNotFound(batch_id)
        originals: dict[int, Order] = {}
        rows: list[tuple[int, Mapping[str, Any]]] = []
        not_retried: dict[str, str] = {}
        erased: list[str] = []
        for order, payload, retried_as in candidates:
            if retried_as is not None:
                not_retried[order.trade_no] = f"already retried as {retried_as}"
            elif payload is None:
                not_retried[order.trade_no] = _ERASED[order.state]
                erased.append(order.trade_no)
            else:
                originals[order.row_no] = order
                rows.append((order.row_no, {**payload, "currency": order.currency}))
        if not rows:
            return RetryResult(
                None, 0, retried_batch=batch_id, not_retried=not_retried, erased=erased
            )
        market = candidates[0][0].market  # one market per batch
        self.settings.account(market)  # MarketUnavailable: refused before anything is stored
        valid, errors = validate_rows(market, rows, notify_url=self.settings.notify_url)
        policy = self.approvals.market_policy(market) if self.approvals else None
        if policy is not None:  # a retry pays again: under the policy as any batch
            valid = list(within_policy(valid, errors, policy))
        if errors:
            return RetryResult(
                None, 0, errors, retried_batch=batch_id, not_retried=not_retried, erased=erased
            )
        refused: list[str] = []
        for row, _ in valid:
            why = self._refusal(originals[row])
            if why is not None:
                not_retried[originals[row].trade_no] = why
                refused.append(originals[row].trade_no)
        valid = [(row, payout) for row, payout in valid if originals[row].trade_no not in refused]
        if not valid:
            return RetryResult(
                None,
                0,
                retried_batch=batch_id,
                not_retried=not_retried,
                erased=erased,
                refused=refused,
            )
        payouts = [
            replace(payout, reference=retry_reference(originals[row].reference))
            for row, payout in valid
        ]
        retry_of = [originals[row].trade_no for row, _ in valid]
        new = NewBatch.of(market, policy, payouts, hold, None, operator or self.settings.operator)
        try:
            result = self._persist(market, payouts, [], new=new, retry_of=retry_of)
        except OverBeneficiaryLimit as over:
            over_rows = [RowError(valid[i - 1][0], {"amount": [w]}) for i, w in over.rows.items()]
            return RetryResult(None, 0, over_rows, retried_batch=batch_id, not_retried=not_retried)
        return RetryResult(
            result.batch_id,
            result.accepted,
            trade_nos=result.trade_nos,
            existing=result.existing,
            held=result.held,
            held_reason=result.held_reason,
            published=result.published,
            retried_batch=batch_id,
            retries=dict(zip(retry_of, result.trade_nos, strict=True)),
            not_retried=not_retried,
            erased=erased,
            refused=refused,
        )

    def _refusal(self, order: Order) -> str | None:
        """Why ``order`` may not be paid again under a new tradeNo now (the provider's
        word), or None when the provider confirms it failed."""
        if self.ask is None:
            return "the provider cannot be asked from here: not retried"
        try:
            word = self.ask(order)
        except (ProviderError, RateLimitTimeout) as exc:
            return f"could not ask the provider ({type(exc).__name__}): run the retry again"
        since = None
        if word.no_record:
            last = self.ledger.last_claimed_ms(order.trade_no)
            since = None if last is None else self.ledger.now_ms() - last
        refused = refuse_failure(
            order, word, since_last_post_ms=since, grace=self.settings.no_record_grace
        )
        return None if refused is None else f"the provider says {refused}"

    def _persist(
        self,
        market: str,
        payouts: Iterable[Payout],
        errors: list[RowError],
        *,
        new: NewBatch,
        retry_of: Sequence[str] | None = None,
        key: BatchKey | None = None,
    ) -> BatchResult:
        """One transaction for the new batch, then its messages (unless held). ``errors``
        are the rejected rows, complete once ``payouts`` is. Under the policy, raises
        OverBeneficiaryLimit (nothing stored)."""
        batch_id = new_batch_id()
        terms = self.approvals.terms(new) if self.approvals is not None else None
        created = self.ledger.create_orders(
            payouts,
            batch_id=batch_id,
            market=market,
            hold=new.hold,
            retry_of=retry_of,
            key=key,
            terms=terms,
        )
        made = [trade_no for trade_no, is_new in created if is_new]
        held, reason = new.hold, None
        if self.approvals is not None:
            held, reason = self.approvals.stored(batch_id, new.created_by or self.settings.operator)
        return BatchResult(
            batch_id,
            len(made),
            sorted(errors, key=lambda e: e.row),
            trade_nos=[t for t, _ in created],
            existing=len(created) - len(made),
            held=held,
            held_reason=reason,
            published=held or self._publish(batch_id, made),
        )

    def _publish(self, batch_id: str, trade_nos: Sequence[str]) -> bool:
        """Publish the committed orders' messages; False when that failed. The orders are
        QUEUED in the ledger, so a failure is no failure of the enqueue: reporting one
        would invite enqueueing the batch again, paying everyone twice. The sweeper
        republishes them (worker.flows.reconcile)."""
        try:
            self.publish(trade_nos)
        except Exception as exc:  # whatever the broker's client raises
            log.warning(
                "batch %s stored, %d orders QUEUED, but not published (%s: %s): the "
                "reconcile pass republishes them after SWEEP_AFTER (%g s)",
                batch_id,
                len(trade_nos),
                type(exc).__name__,
                mask_text(str(exc).splitlines()[0] if str(exc) else ""),
                self.settings.sweep_after,
            )
            return False
        return True

    def enqueue(
        self,
        market: str,
        row: Mapping[str, Any],
        *,
        hold: bool = False,
        operator: str | None = None,
        not_before: datetime | None = None,
    ) -> Order:
        """One payout, as a batch of one (see :meth:`enqueue_batch`); returns its order (the
        existing one if its reference is known).

        Raises UnknownMarket for a bad market code, MarketUnavailable for a market
        without a provider account, InvalidPayout for a bad payout (also one the policy
        refuses).
        """
        market = _market(market)
        self.settings.account(market)  # MarketUnavailable: refused before anything is stored
        self._check_notify_url(market, [row])
        try:
            payout = validate_row(market, row, notify_url=self.settings.notify_url)
        except ValidationError as exc:
            raise InvalidPayout(exc.messages_dict) from None
        policy = self.approvals.market_policy(market) if self.approvals else None
        problem = policy_problem(policy, payout) if policy else None
        if problem is not None:
            raise InvalidPayout({"amount": [problem]})
        who = operator or self.settings.operator
        new = NewBatch.of(market, policy, [payout], hold, not_before, who)
        try:
            result = self._persist(market, [payout], [], new=new)
        except OverBeneficiaryLimit as over:
            raise InvalidPayout({"amount": list(over.rows.values())}) from None
        order = self.ledger.get(result.trade_nos[0])
        assert order is not None
        return order

    def _check_notify_url(self, market: str, rows: Sequence[object]) -> None:
        """A NOTIFY_URL this market refuses is one configuration error, not every row's."""
        problem = notify_url_error(market, self.settings.notify_url)
        if problem and any(
            not isinstance(row, Mapping) or not str(row.get("notifyUrl") or "").strip()
            for row in rows
        ):
            raise ConfigError(f"NOTIFY_URL, sent for rows without a notifyUrl: {problem}")

    def _sign_all(self, market: str, payouts: list[Payout]) -> None:
        """A dry run signs every payload exactly as a worker would, and sends nothing."""
        sign = self.sign(market)
        for payout in payouts:
            sign(payout.fields, new_trade_no())


class _Rejected(Exception):
    """The batch is not to be enqueued: it rolls back what the ledger took of it."""


def _enqueued(
    valid: Iterable[tuple[int, Payout]],
    errors: list[RowError],
    skip_invalid: bool,
    numbers: list[int],
) -> Iterator[Payout]:
    """The payouts to enqueue, as they are validated. Once a row is bad (unless
    ``skip_invalid``) none is handed over any more, yet every row is still validated for
    its errors; then, or when no row was good, raises _Rejected. ``numbers`` gets the
    input row of each payout handed over."""
    count = 0
    for row, payout in valid:
        if errors and not skip_invalid:
            continue
        count += 1
        numbers.append(row)
        yield payout
    if (errors and not skip_invalid) or not count:
        raise _Rejected


def _market(market: str) -> str:
    """The market's code (``MARKETS``' spelling), or UnknownMarket."""
    code = market_code(market)
    if code is None:
        raise UnknownMarket(market, MARKETS)
    return code


def retry_reference(reference: str | None) -> str | None:
    """The reference of a retry of an order with ``reference``: ``#retry1`` appended, or
    the number of the retry it already ends with counted up (None stays None)."""
    if reference is None:
        return None
    match = _RETRY_SUFFIX.search(reference)
    if match is None:
        return f"{reference}#retry1"
    return f"{reference[: match.start()]}#retry{int(match.group(1)) + 1}"
