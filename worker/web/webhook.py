"""One provider notification, verified and applied: the webhook's rules, without HTTP.

The provider's asynchronous notification (PROVIDERS.md) is a JSON object with
``platFormTradeNo, tradeNo, amount, status, message/remark, timestamp, sign``.
:meth:`WebhookHandler.handle` takes it parsed and returns a :class:`Reply`: the HTTP
status and text to answer, the metrics outcome label and the log lines to write.
:mod:`worker.web.notify` serves it over HTTP.

* The ``sign`` is verified (constant time, :func:`signers`) before anything touches
  state, with the secret of the provider account of the order the notification names
  (tradeNo -> order -> market -> account): a provider account's secret vouches only
  for its own orders. A sign that no account's secret makes is refused (401,
  ``forged``); a verified tradeNo we do not have is answered ``OK`` and counted
  (``unknown_order``), never applied; a sign made with another account's secret than
  the order's is refused (401, ``wrong_account``), as is any signed notification for an
  order whose market has no account configured (401, ``no_account``). A verified
  notification is applied with
  ``apply_report(..., source="webhook")``, so replays are harmless and a report that
  contradicts a final state is recorded as a discrepancy, never applied. A failure
  reported for a SUCCEEDED order is such a discrepancy too: the ledger marks the order,
  and the reconcile pass asks the details API, whose word alone makes it REVERSED.
  Accepted notifications are answered with exactly ``OK``; no provider call is made here.
* Unsigned notifications are refused (401) unless ``allow_unsigned``; then they only
  request a lookup of one of our open orders, which asks the provider, and never set a
  state themselves. A signed notification with a status we do not know does the same.
* A signed body without tradeNo/status is a 400; a tradeNo that is not ours is ``OK``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, assert_never

from worker.core.signing import SIGN_FIELD, verify
from worker.core.states import FINAL_STATES, Outcome, State
from worker.provider.answers import PAYOUT_STATES
from worker.provider.report import ProviderReport
from worker.provider.vexora import is_trade_no

if TYPE_CHECKING:
    from worker.ledger import Ledger, Order

OK = "OK"
# Provider text kept on the order or logged is cut to this length.
_MAX_FACT = 64

RequestLookups = Callable[[Sequence[str]], object]


class Unavailable(Exception):
    """A lookup could not be requested (the broker is down): answer 503 so the provider
    retries."""


@dataclass(frozen=True)
class LogLine:
    """One line to log: a level, a %-format and its arguments."""

    level: int
    message: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Reply:
    """What to answer, what to count and what to log for one notification."""

    status: int
    text: str
    # the label of disburse_webhooks_total (worker.coordination.metrics.WEBHOOK_OUTCOMES)
    outcome: str
    logs: tuple[LogLine, ...] = ()
    trade_no: str | None = None  # logged with each line: only a tradeNo that is ours


def _ok(outcome: str, *logs: LogLine, trade_no: str | None = None) -> Reply:
    return Reply(200, OK, outcome, logs, trade_no)


def _info(message: str, *args: Any) -> LogLine:
    return LogLine(logging.INFO, message, args)


def _warning(message: str, *args: Any) -> LogLine:
    return LogLine(logging.WARNING, message, args)


def _error(message: str, *args: Any) -> LogLine:
    return LogLine(logging.ERROR, message, args)


_UNKNOWN_ORDER = _warning("webhook for an unknown tradeNo")


def signers(body: Mapping[str, Any], secrets: Mapping[str, str]) -> frozenset[str]:
    """The markets whose account's secret makes the body's ``sign``: empty when none does.

    ``secrets`` maps each market that has a provider account configured to its app
    secret. Every distinct secret is tried (each compared in constant time), so the time
    taken does not tell which one matched.
    """
    verified = {secret: verify(body, secret) for secret in set(secrets.values())}
    return frozenset(market for market, secret in secrets.items() if verified[secret])


@dataclass(frozen=True)
class WebhookHandler:
    """Verifies and applies provider notifications to ``orders``.

    ``secrets`` maps each market with a provider account configured to that account's
    app secret (markets sharing an account share its secret); ``request_lookups`` asks
    for lookups of tradeNos (published to the workers, marked outstanding).
    """

    orders: Ledger
    secrets: Mapping[str, str] = field(repr=False)
    request_lookups: RequestLookups
    allow_unsigned: bool = False

    def handle(self, body: Mapping[str, Any]) -> Reply:
        """The reply to one notification; raises :class:`Unavailable` or Redis errors only."""
        given = body.get(SIGN_FIELD)
        if given is None or given == "":
            return self._unsigned(body)
        signed_by = signers(body, self.secrets)
        if not signed_by:
            return Reply(
                401,
                "bad signature",
                "forged",
                (_warning("webhook refused: signature does not verify"),),
                _safe_trade_no(body.get("tradeNo")),
            )

        trade_no = _text(body.get("tradeNo"))
        status = _text(body.get("status"))
        if not trade_no or not status:
            refused = _warning("webhook refused: signed, but tradeNo or status missing")
            return Reply(400, "tradeNo and status are required", "malformed", (refused,))
        if not is_trade_no(trade_no):
            return _ok(
                "unknown_order",
                _warning("webhook for a tradeNo that cannot be ours: %r", trade_no[:40]),
            )
        order = self.orders.get(trade_no)
        if order is None:
            return _ok("unknown_order", _UNKNOWN_ORDER, trade_no=trade_no)
        if order.market not in signed_by:
            return self._wrong_signer(order.market, trade_no)

        state = PAYOUT_STATES.get(status)
        if state is None:
            return self._unknown_status(order, status)

        message = _fact(body.get("message")) or _fact(body.get("remark"))
        report = ProviderReport(
            state, _fact(body.get("platFormTradeNo")), status[:_MAX_FACT], message or ""
        )
        outcome = self.orders.apply_report(trade_no, report, source="webhook")
        if outcome is Outcome.UNCONFIRMED:
            # Recorded, not applied: a lookup asks both of the provider's APIs now.
            self._request_lookup(trade_no)
        label, line = _applied(outcome, state)
        checked = () if outcome is Outcome.MISSING else _check_amount(order, body)
        return _ok(label, *checked, line, trade_no=trade_no)

    def _wrong_signer(self, market: str, trade_no: str) -> Reply:
        """Signed with a secret of ours, but not with the secret of this order's account."""
        if market not in self.secrets:
            line = _error(
                "webhook refused: the order's market %s has no provider account configured",
                market,
            )
            return Reply(401, "bad signature", "no_account", (line,), trade_no)
        line = _error(
            "webhook refused: signed with another provider account's secret than market %s's",
            market,
        )
        return Reply(401, "bad signature", "wrong_account", (line,), trade_no)

    def _unsigned(self, body: Mapping[str, Any]) -> Reply:
        if not self.allow_unsigned:
            return Reply(
                401,
                "signature required",
                "unsigned",
                (_warning("webhook refused: unsigned"),),
                _safe_trade_no(body.get("tradeNo")),
            )
        trade_no = _text(body.get("tradeNo"))
        if not trade_no:
            return Reply(400, "tradeNo is required", "malformed")
        # Unauthenticated input: it may only make us ask the provider about one of our
        # own orders that is still open, never set a state.
        order = self.orders.get(trade_no) if is_trade_no(trade_no) else None
        if order is None:
            return _ok("unknown_order", _warning("unsigned webhook for an unknown tradeNo"))
        if order.state not in FINAL_STATES:
            self._request_lookup(trade_no)
        return _ok(
            "unsigned_lookup", _info("unsigned webhook: lookup requested"), trade_no=trade_no
        )

    def _unknown_status(self, order: Order, status: str) -> Reply:
        if order.state not in FINAL_STATES:
            self._request_lookup(order.trade_no)
        return _ok(
            "unknown_status",
            _warning("webhook with unknown status %r: lookup requested", status[:20]),
            trade_no=order.trade_no,
        )

    def _request_lookup(self, trade_no: str) -> None:
        try:
            self.request_lookups([trade_no])
        except Exception as exc:
            raise Unavailable(f"could not publish a lookup ({type(exc).__name__})") from exc


def _check_amount(order: Order, body: Mapping[str, Any]) -> tuple[LogLine, ...]:
    """A verified report of another amount than ours is applied, but said loudly."""
    text = _text(body.get("amount"))
    if not text:
        return ()
    try:
        same = Decimal(text) == order.amount
    except ArithmeticError:  # not a number, or a signalling NaN
        same = False
    if same:
        return ()
    return (_error("webhook reports amount %r, the order has %s", text[:_MAX_FACT], order.amount),)


def _applied(outcome: Outcome, state: State) -> tuple[str, LogLine]:
    """The metrics label and log line of a verified report the ledger has applied."""
    match outcome:
        case Outcome.MOVED:
            return "accepted", _info("webhook: -> %s", state)
        case Outcome.SAME:
            return "replayed", _info("webhook replayed: already %s", state)
        case Outcome.DISCREPANCY:
            # A failure after success: the ledger has the order marked for the details API.
            checked = "; if SUCCEEDED, the details API is asked" if state is State.FAILED else ""
            return "contradicts_final", _error(
                "webhook says %s but the order is final in another state: discrepancy recorded%s",
                state,
                checked,
            )
        case Outcome.IGNORED:
            # e.g. PROCESSING after the order is already final (a late notification),
            # or a report for an order we have not sent (QUEUED): nothing changes.
            level = logging.ERROR if state in FINAL_STATES else logging.INFO
            return "out_of_order", LogLine(
                level, "webhook says %s: not applied to the order's state", (state,)
            )
        case Outcome.MISSING:
            return "unknown_order", _UNKNOWN_ORDER
        case Outcome.UNCONFIRMED:
            return "unconfirmed", _warning(
                "webhook says %s for an order that may have been sent more than once: "
                "recorded; a lookup asks the provider to confirm it",
                state,
            )
        case Outcome.OTHER_ID:
            return "other_id", _error(
                "webhook names another provider id than the one stored: both recorded"
            )
        case _:
            assert_never(outcome)


def _text(value: Any) -> str | None:
    """A top-level field as text: strings as they are, numbers tolerated, others None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _fact(value: Any) -> str | None:
    text = _text(value)
    return text[:_MAX_FACT] if text else None


def _safe_trade_no(value: Any) -> str | None:
    text = _text(value)
    return text if is_trade_no(text) else None
