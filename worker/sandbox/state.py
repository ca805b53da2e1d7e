"""The sandbox's record: payouts, tokens, counters. Thread-safe; one lock around all of it.

Everything the introspection endpoints report is computed from this record, so
tests can assert on what the provider *received* (e.g. that no tradeNo was ever
paid twice) rather than on what the client believes it sent.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
import threading
from collections import Counter, deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from worker.sandbox.chance import Fate
from worker.sandbox.protocol import (
    STATUS_FAILED,
    STATUS_MESSAGES,
    STATUS_PROCESSING,
    STATUS_SUCCEEDED,
)

_ID_ALPHABET = string.ascii_lowercase + string.digits
PLATFORM_ID_LENGTH = 16
WINDOW = 1.0  # seconds: the sliding window of the rate ceiling and of the busiest-second stat

# Counters that always appear in stats, even at zero.
COUNTERS = (
    "payout_requests",
    "repeated_trade_no_posts",
    "tokens_issued",
    "details_lookups",
    "list_requests",
    "list_arrivals",
    "query_requests",
    "query_not_found",
    "balance_requests",
    "rate_limited",
    "bad_sign",
    "unknown_merchant",
    "invalid_requests",
    "errors_before_record",
    "errors_after_record",
    "hangs",
    "token_rejected",
    "details_unauthorized",
    "details_not_found",
    "webhooks_sent",
    "webhooks_delivered",
    "webhooks_failed",
    "webhooks_retried",
    "webhooks_dropped",
    "webhooks_duplicated",
    "webhooks_suppressed",
    "webhooks_skipped_remote",
    "webhooks_skipped_invalid",
    "reversals",
)


@dataclass
class Payout:
    """One accepted payout, as the provider sees it."""

    trade_no: str
    platform_trade_no: str
    market: str
    amount: str
    currency: str
    fields: dict[str, str]  # what was received, minus sign
    received_at: float  # Unix seconds
    fate: Fate
    merchant_no: str = ""  # the merchant account it was paid from
    status: str = STATUS_PROCESSING
    settled_at: float | None = None  # Unix seconds
    accepted_count: int = 1
    webhook_attempts: int = 0
    webhook_deliveries: int = 0
    reversed_at: float | None = None  # Unix seconds: failed after it had succeeded

    @property
    def message(self) -> str:
        return STATUS_MESSAGES.get(self.status, "")

    @property
    def remark(self) -> str:
        return self.fields.get("remark", "")

    def as_dict(self, post_count: int) -> dict[str, Any]:
        return {
            "platFormTradeNo": self.platform_trade_no,
            "market": self.market,
            "amount": self.amount,
            "currency": self.currency,
            "fields": dict(self.fields),
            "merchant_no": self.merchant_no,
            "received_at": self.received_at,
            "status": self.status,
            "message": self.message,
            "settled_at": self.settled_at,
            "accepted_count": self.accepted_count,
            "post_count": post_count,
            "webhook_attempts": self.webhook_attempts,
            "webhook_deliveries": self.webhook_deliveries,
            "reversed_at": self.reversed_at,
        }


class State:
    """All mutable sandbox state behind one lock; methods return copies, never live records."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0
        self._clear()

    def _clear(self) -> None:
        self._payouts: dict[str, Payout] = {}
        self._by_platform: dict[str, Payout] = {}
        self._order: list[str] = []  # tradeNos in acceptance order
        self._posts: Counter[str] = Counter()  # tradeNo -> POSTs that carried it
        self._counters: Counter[str] = Counter()
        self._arrivals: deque[float] = deque()  # payout POST arrivals in the last WINDOW
        self._max_per_window = 0
        self._accounts: dict[str, _Window] = {}  # the same, per merchant account
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._succeeded_total = Decimal(0)
        self._pending_total = Decimal(0)

    def reset(self) -> int:
        """Forget everything; returns the new generation (stale timers check it)."""
        with self._lock:
            self._clear()
            self.generation += 1
            return self.generation

    # --- counters -----------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> int:
        """Add ``n`` to a counter; returns its new value."""
        with self._lock:
            self._counters[name] += n
            return self._counters[name]

    def payout_post_arrived(self, now: float, ceiling: float | None, account: str = "") -> bool:
        """Note a payout POST at monotonic ``now`` to ``account`` (a merchantNo); False
        when it is over that account's rate ceiling."""
        with self._lock:
            self._counters["payout_requests"] += 1
            self._max_per_window = max(self._max_per_window, _arrive(self._arrivals, now))
            window = self._accounts.setdefault(account, _Window())
            window.requests += 1
            window.max_per_window = max(window.max_per_window, _arrive(window.arrivals, now))
            if ceiling is None:
                return True
            admitted = window.admitted
            while admitted and admitted[0] <= now - WINDOW:
                admitted.popleft()
            if len(admitted) + 1 > ceiling:
                self._counters["rate_limited"] += 1
                return False
            admitted.append(now)
            return True

    def count_post(self, trade_no: str) -> int:
        """Count a POST carrying ``trade_no``; returns how many have (this one included)."""
        with self._lock:
            self._posts[trade_no] += 1
            return self._posts[trade_no]

    # --- payouts ------------------------------------------------------------------------

    def new_platform_id(self) -> str:
        with self._lock:
            while True:
                candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(PLATFORM_ID_LENGTH))
                if candidate not in self._by_platform:
                    return candidate

    def accept(self, payout: Payout) -> bool:
        """Record a new payout atomically; False (and counted) if the tradeNo is known."""
        with self._lock:
            if payout.trade_no in self._payouts:
                self._counters["repeated_trade_no_posts"] += 1
                return False
            if payout.platform_trade_no in self._by_platform:  # pragma: no cover - 36**16
                raise RuntimeError("platFormTradeNo collision")
            self._payouts[payout.trade_no] = payout
            self._by_platform[payout.platform_trade_no] = payout
            self._order.append(payout.trade_no)
            self._pending_total += Decimal(payout.amount)
            return True

    def get(self, trade_no: str) -> Payout | None:
        with self._lock:
            payout = self._payouts.get(trade_no)
            return dataclasses.replace(payout) if payout else None

    def get_by_platform(self, platform_trade_no: str) -> Payout | None:
        with self._lock:
            payout = self._by_platform.get(platform_trade_no)
            return dataclasses.replace(payout) if payout else None

    def page(self, page: int, size: int) -> tuple[list[Payout], int]:
        """Page ``page`` (from 1) of the payouts, newest first, and the total count."""
        with self._lock:
            total = len(self._order)
            stop = total - (page - 1) * size
            start = max(0, stop - size)
            trade_nos = self._order[start:stop] if stop > 0 else []
            rows = [dataclasses.replace(self._payouts[t]) for t in reversed(trade_nos)]
            return rows, total

    def settle(self, trade_no: str, generation: int, now: float) -> Payout | None:
        """Move a processing payout to its decided final status; None if already done."""
        with self._lock:
            payout = self._payouts.get(trade_no)
            if generation != self.generation or payout is None:
                return None
            if payout.status != STATUS_PROCESSING:
                return None
            payout.status = STATUS_FAILED if payout.fate.fails else STATUS_SUCCEEDED
            payout.settled_at = now
            self._pending_total -= Decimal(payout.amount)
            if payout.status == STATUS_SUCCEEDED:
                self._succeeded_total += Decimal(payout.amount)
            return dataclasses.replace(payout)

    def reverse(self, trade_no: str, now: float) -> Payout | None:
        """A succeeded payout bounces back: failed from now on (the details API and the
        query say so). None unless it had succeeded."""
        with self._lock:
            payout = self._payouts.get(trade_no)
            if payout is None or payout.status != STATUS_SUCCEEDED:
                return None
            payout.status = STATUS_FAILED
            payout.reversed_at = now
            self._succeeded_total -= Decimal(payout.amount)
            self._counters["reversals"] += 1
            return dataclasses.replace(payout)

    def processing(self) -> list[str]:
        with self._lock:
            return [t for t, p in self._payouts.items() if p.status == STATUS_PROCESSING]

    def webhook_attempted(self, trade_no: str, generation: int, delivered: bool) -> None:
        with self._lock:
            payout = self._payouts.get(trade_no)
            if payout is None or generation != self.generation:
                return
            payout.webhook_attempts += 1
            if delivered:
                payout.webhook_deliveries += 1

    def totals(self) -> tuple[Decimal, Decimal]:
        """(sum of succeeded amounts, sum of processing amounts)."""
        with self._lock:
            return self._succeeded_total, self._pending_total

    # --- tokens -------------------------------------------------------------------------

    def issue_token(self, token: str, expires_at: float, now: float) -> None:
        with self._lock:
            if len(self._tokens) > 1000:
                self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = expires_at
            self._counters["tokens_issued"] += 1

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (as if expired early)."""
        with self._lock:
            self._tokens.clear()

    def token_valid(self, token: str, now: float) -> bool:
        with self._lock:
            expires_at = self._tokens.get(token)
            return expires_at is not None and now < expires_at

    # --- introspection ------------------------------------------------------------------

    def payouts(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {t: p.as_dict(self._posts[t]) for t, p in self._payouts.items()}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            statuses = Counter(p.status for p in self._payouts.values())
            out: dict[str, Any] = {name: self._counters[name] for name in COUNTERS}
            out.update(self._counters)
            out.update(
                payouts=len(self._payouts),
                succeeded=statuses[STATUS_SUCCEEDED],
                failed=statuses[STATUS_FAILED],
                pending=statuses[STATUS_PROCESSING],
                duplicate_payments=sum(1 for p in self._payouts.values() if p.accepted_count > 1),
                max_payout_requests_per_second=self._max_per_window,
                accounts={
                    account: {
                        "payout_requests": window.requests,
                        "max_payout_requests_per_second": window.max_per_window,
                    }
                    for account, window in self._accounts.items()
                },
            )
            return out


@dataclass
class _Window:
    """One merchant account's payout POSTs: the sliding second, its busiest, its ceiling."""

    arrivals: deque[float] = dataclasses.field(default_factory=deque)
    admitted: deque[float] = dataclasses.field(default_factory=deque)  # not rate limited
    requests: int = 0
    max_per_window: int = 0


def _arrive(arrivals: deque[float], now: float) -> int:
    """Add an arrival at ``now``; how many lie in the sliding second ending at it."""
    while arrivals and arrivals[0] <= now - WINDOW:
        arrivals.popleft()
    arrivals.append(now)
    return len(arrivals)
