"""Accepting payouts: validate every row -> persist in the ledger -> publish.

Nothing moves until every row is valid (unless the caller asks to skip invalid
rows). Orders are persisted before their messages are published, so a message can
be lost (the sweeper republishes) but never point at a payout that is not recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from schemas import MARKETS, Payout, RowError, market_code, validate_row, validate_rows
from worker.columns import notify_url_error
from worker.config import Settings
from worker.exceptions import ConfigError, InvalidPayout, UnknownMarket
from worker.ledger import Ledger, Order, new_batch_id, new_trade_no

# Publishes submit messages for orders (worker.publish.publish_submissions).
Publish = Callable[[Sequence[str]], object]
# Signs one payout's fields with a tradeNo exactly as a worker would
# (VexoraClient.signed_body of the market's account).
Sign = Callable[[Mapping[str, str], str], object]


@dataclass
class BatchResult:
    batch_id: str | None  # None when nothing was enqueued
    accepted: int  # orders this batch created (rows found by reference are ``existing``)
    rejected: list[RowError] = field(default_factory=list)
    trade_nos: list[str] = field(default_factory=list)
    existing: int = 0  # rows whose reference an earlier batch enqueued: its order is kept
    held: bool = False
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "accepted": self.accepted,
            "rejected": [{"row": e.row, "errors": e.errors} for e in self.rejected],
        }


class Producer:
    """``sign`` gives the signer of a market's account, for dry runs."""

    def __init__(
        self, ledger: Ledger, settings: Settings, *, publish: Publish, sign: Callable[[str], Sign]
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.publish = publish
        self.sign = sign

    def enqueue_batch(
        self,
        market: str,
        rows: Iterable[tuple[int, Mapping[str, Any]]],
        *,
        skip_invalid: bool = False,
        hold: bool = False,
        dry_run: bool = False,
        parse_errors: Iterable[RowError] = (),
    ) -> BatchResult:
        """Validate all rows; unless every one is valid (or ``skip_invalid``), enqueue none.

        Raises UnknownMarket for a market code we do not pay out in, ConfigError when
        rows without a notifyUrl would be sent the NOTIFY_URL setting and this market
        refuses it (JP and KH notify over HTTPS only).
        """
        market = _market(market)
        rows = list(rows)
        self._check_notify_url(market, [row for _, row in rows])
        valid, errors = validate_rows(market, rows, notify_url=self.settings.notify_url)
        errors = sorted([*errors, *parse_errors], key=lambda e: e.row)
        if (errors and not skip_invalid) or not valid:
            return BatchResult(None, 0, errors)
        payouts = [payout for _, payout in valid]
        if dry_run:
            self._sign_all(market.upper(), payouts)
            return BatchResult(None, len(payouts), errors, dry_run=True)
        batch_id = new_batch_id()
        created = self.ledger.create_orders(payouts, batch_id=batch_id, market=market, hold=hold)
        new = [trade_no for trade_no, is_new in created if is_new]
        if not hold:
            self.publish(new)
        return BatchResult(
            batch_id,
            len(new),
            errors,
            trade_nos=[t for t, _ in created],
            existing=len(created) - len(new),
            held=hold,
        )

    def enqueue(self, market: str, row: Mapping[str, Any], *, hold: bool = False) -> Order:
        """One payout; returns its order (the existing one if its reference is known).

        Raises UnknownMarket for a bad market code, InvalidPayout for a bad payout.
        """
        market = _market(market)
        self._check_notify_url(market, [row])
        try:
            payout = validate_row(market, row, notify_url=self.settings.notify_url)
        except ValidationError as exc:
            raise InvalidPayout(exc.messages_dict) from None
        ((trade_no, is_new),) = self.ledger.create_orders(
            [payout], batch_id=new_batch_id(), market=payout.market, hold=hold
        )
        if is_new and not hold:
            self.publish([trade_no])
        order = self.ledger.get(trade_no)
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


def _market(market: str) -> str:
    """The market's code (``MARKETS``' spelling), or UnknownMarket."""
    code = market_code(market)
    if code is None:
        raise UnknownMarket(market, MARKETS)
    return code
