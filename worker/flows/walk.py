"""The list walk: many pending orders reconciled through the paged disbursement list.

A lookup asks about one order per request; a page of the list (seed 003,
``GET /api/v1.0/disbursement/{account_id}?page=N``) shows 25, newest first. When a
pass finds at least ``RECONCILE_WALK_AT`` orders due, it walks the list from page 1
down, matching rows to orders by the provider's transaction id, and applies every
row about one of them as a lookup would (:meth:`worker.flows.lookup.Lookups.apply_details`:
``apply_report``, with the fees and total debited the row shows). It stops when

- every order the walk must cover (pending since before it began) has been shown;
- a page's oldest row was posted before the first of those orders was first claimed
  (less ``WALK_SKEW``): older rows cannot be about them;
- the list ends;
- it has read as many pages as single lookups of the orders left would cost
  (``pages >= orders``): a list in which they lie far apart is not worth walking;
- three pages in a row showed no row it had not seen (a provider ignoring ``page``,
  or payouts arriving faster than a page a request).

Orders it must cover and did not see then fall back to single lookups, as do orders
with no provider id (nothing to match them by) and every order when the list cannot
be read (an error other than a 429).

Why 50 (the default ``RECONCILE_WALK_AT``): below two pages' worth, a walk saves at
most the lookups of a few dozen orders, and it always pays for the pages at the top of
the list, which hold the payouts too young to be due and those already final: at the
default 20 payouts/s and ``RECONCILE_AFTER`` of 60 s that is some 48 pages before the
first due order. Measured so (``python -m bench reconcile``, BENCHMARKS.md), under
1,200 younger rows: 50 due orders cost 50 list requests against 50 lookups, 100 cost 52
against 100, 200 cost 56 against 200; 10 cost 20 against 10, the cap above, which
bounds a wrong choice to twice the single lookups.

New payouts arrive at the top while a walk goes down, and shift rows down, never
up: reading page n+1 after k arrivals shows k rows of page n again (skipped by id),
and never misses one. Hence a walk cut short by its budget (``LOOKUP_BUDGET``, one
pass) resumes at the same page number in the next pass (the cursor, kept in Redis):
whatever arrived meanwhile only makes it re-read some rows. Orders pending since
before the walk began but not shown yet wait for it meanwhile, not asked about one
by one. Every page takes a slot of the cluster-wide details rate limit (the client
runs ``throttle`` before every request, the retry after a 401 with a fresh token
included: the same page again). The walk runs inside the reconcile pass and renews
its lock before every page, so two beats never ask for the same page; a walk that
lost its lock stops at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import redis

from worker.core import keys
from worker.core.defaults import WALK_SKEW, WALK_STALE_PAGES
from worker.core.exceptions import ProviderError, RateLimited, RateLimitTimeout
from worker.flows.reads import Limiter, LookupReport
from worker.ledger import Order
from worker.provider.details import Throttle
from worker.provider.disbursements import Disbursement, ListPage

log = logging.getLogger(__name__)


class ListReads(Protocol):
    """The paged list (worker.provider.details.DetailsClient.page)."""

    def page(self, number: int, *, throttle: Throttle) -> ListPage: ...


class Clock(Protocol):
    """What the walk reads of the ledger (worker.ledger.Ledger)."""

    def now_ms(self) -> int: ...

    def earliest_claim_ms(self, trade_nos: Sequence[str]) -> int | None: ...


class SkippedRows(Protocol):
    def list_rows_skipped(self, count: int) -> None: ...


ApplyRow = Callable[[Order, Disbursement, LookupReport], None]


@dataclass
class WalkReport:
    """What one pass's share of a walk did."""

    first_page: int = 1
    pages: int = 0
    rows: int = 0
    skipped_rows: int = 0  # malformed rows (counted in the metrics too)
    matched: list[str] = field(default_factory=list)  # tradeNos the list showed: applied
    waiting: list[str] = field(default_factory=list)  # left for the walk's next pass
    fall_back: list[str] = field(default_factory=list)  # to single lookups
    finished: bool = False
    why: str = ""  # why it stopped
    applied: LookupReport = field(default_factory=LookupReport)

    def __str__(self) -> str:
        last = self.first_page + self.pages - 1
        pages = f"pages {self.first_page}-{last}" if self.pages else "no page"
        state = "finished" if self.finished else "to be continued"
        line = (
            f"list walk ({state}: {self.why}): {pages}, {self.rows} rows, "
            f"{len(self.matched)} pending orders shown ({self.applied.as_dict()})"
        )
        if self.skipped_rows:
            line += f", {self.skipped_rows} malformed rows skipped"
        if self.waiting:
            line += f", {len(self.waiting)} orders wait for its next pages"
        return line


class ListWalk:
    """Walks the list for the reconcile pass (see the module's docstring)."""

    def __init__(
        self,
        details: ListReads,
        limiter: Limiter,
        apply: ApplyRow,
        ledger: Clock,
        client: redis.Redis,
        metrics: SkippedRows,
        *,
        prefix: str,
        budget: float,
        cursor_ttl: float,
    ) -> None:
        self.details = details
        self.limiter = limiter
        self.apply = apply
        self.ledger = ledger
        self.redis = client
        self.metrics = metrics
        self.cursor_key = keys.reconcile(prefix, "walk")
        self.budget = budget
        self.cursor_ttl_ms = int(cursor_ttl * 1000)

    def run(self, pending: Sequence[Order], keep_lock: Callable[[], bool]) -> WalkReport:
        """This pass's share of the walk over ``pending`` (the pass's due orders).

        ``keep_lock`` renews the pass's lock before every page; False stops the walk.
        """
        report = WalkReport()
        # A page's rows are applied (a statement each) in a thread of their own while the
        # next page is fetched: at 20 pages/s they take about as long as the 50 ms
        # between pages, and one after the other would halve the walk's pace.
        applying: list[Future[None]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="walk-apply") as applier:

            def apply_later(shown: list[tuple[Order, Disbursement]]) -> None:
                applying.append(applier.submit(self._apply, shown, report.applied))

            self._walk(report, pending, keep_lock, apply_later)
        for done in applying:
            done.result()  # the first failure to apply, if any, fails the pass
        return report

    def _apply(self, shown: list[tuple[Order, Disbursement]], applied: LookupReport) -> None:
        for order, row in shown:
            self.apply(order, row, applied)

    def _walk(
        self,
        report: WalkReport,
        pending: Sequence[Order],
        keep_lock: Callable[[], bool],
        apply_later: Callable[[list[tuple[Order, Disbursement]]], None],
    ) -> WalkReport:
        report.fall_back = [o.trade_no for o in pending if not o.platform_trade_no]
        started_ms, page = self._cursor()
        report.first_page = page
        # The orders this walk must show: pending since before it began, so on the list
        # before its first page was read.
        want = {o.platform_trade_no: o for o in pending if o.platform_trade_no}
        cover = {o.trade_no for o in want.values() if (o.state_entered_ms or 0) < started_ms}
        first_claim = self.ledger.earliest_claim_ms(sorted(cover)) if cover else None
        horizon = None if first_claim is None else first_claim - int(WALK_SKEW * 1000)
        cap = max(1, len(cover))
        deadline = time.monotonic() + self.budget
        seen: set[str] = set()
        stale = 0

        def throttle() -> None:
            self.limiter.acquire(timeout=max(0.0, deadline - time.monotonic()))

        while True:
            if not cover:
                report.why = "every order it covers was shown"
                break
            if report.pages >= cap:
                report.why = f"{report.pages} pages: single lookups cost no more now"
                break
            if not keep_lock():
                report.why = "the pass lost its lock"
                report.waiting = [o.trade_no for o in want.values()]
                return report  # another pass may be walking: its cursor is its own
            try:
                found = self.details.page(page, throttle=throttle)
            except RateLimitTimeout:
                return self._pause(report, started_ms, page, want, "budget spent")
            except RateLimited as exc:
                self.limiter.penalize(exc.retry_after or 1.0)
                return self._pause(report, started_ms, page, want, "the provider said 429")
            except ProviderError as exc:
                # The list cannot be read now: ask about each order this time, and take
                # the walk up again where it was on the next pass.
                log.warning("list walk: page %d failed (%s); single lookups", page, exc)
                self._save(started_ms, page)
                report.why = f"page {page} failed: {type(exc).__name__}"
                report.fall_back += [o.trade_no for o in want.values()]
                return report
            report.pages += 1
            report.rows += len(found.rows)
            if found.skipped:
                report.skipped_rows += len(found.skipped)
                self.metrics.list_rows_skipped(len(found.skipped))
            new = [row for row in found.rows if row.transaction_id not in seen]
            seen.update(row.transaction_id for row in new)
            stale = 0 if new else stale + 1
            shown = []
            for row in new:
                order = want.get(row.transaction_id)
                if order is None or row.state is None:
                    continue  # not ours, not due, or a status a single lookup must clear up
                del want[row.transaction_id]
                cover.discard(order.trade_no)
                report.matched.append(order.trade_no)
                shown.append((order, row))
            if shown:
                apply_later(shown)
            posted = [row.posted_at_ms for row in found.rows if row.posted_at_ms is not None]
            if horizon is not None and posted and min(posted) < horizon:
                report.why = "past the first claim of the orders it covers"
                break
            if not found.more:
                report.why = "end of the list"
                break
            if stale >= WALK_STALE_PAGES:
                report.why = f"{stale} pages in a row showed nothing new"
                break
            page += 1
        report.finished = True
        self.redis.delete(self.cursor_key)
        report.fall_back += [o.trade_no for o in want.values() if o.trade_no in cover]
        report.waiting = [o.trade_no for o in want.values() if o.trade_no not in cover]
        return report

    def _pause(
        self, report: WalkReport, started_ms: int, page: int, want: dict[str, Order], why: str
    ) -> WalkReport:
        """Stop for this pass; the next one reads ``page`` again."""
        self._save(started_ms, page)
        report.why = why
        report.waiting = [o.trade_no for o in want.values()]
        return report

    def _cursor(self) -> tuple[int, int]:
        """(when the walk began, server ms; the page to read next): a new walk's, or
        the one a pass before this left."""
        saved = {
            (k.decode() if isinstance(k, bytes) else k): v
            for k, v in self.redis.hgetall(self.cursor_key).items()
        }
        try:
            return int(saved["started_ms"]), int(saved["page"])
        except (KeyError, ValueError):
            return self.ledger.now_ms(), 1

    def _save(self, started_ms: int, page: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.cursor_key, mapping={"started_ms": started_ms, "page": page})
        pipe.pexpire(self.cursor_key, self.cursor_ttl_ms)
        pipe.execute()
