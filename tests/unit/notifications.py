"""Provider notifications and orders to receive them, shared by test_webhook and test_notify."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from werkzeug.test import Client

from schemas import Payout
from worker.core.signing import sign
from worker.core.states import State
from worker.ledger import Ledger, new_batch_id

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SECRET = "webhook-test-secret"


def local_client(app: WSGIApplication) -> Client:
    """A test client of ``app`` whose requests come from this machine, as a server on
    loopback sees them (werkzeug's test client sets no REMOTE_ADDR)."""

    def from_here(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ.setdefault("REMOTE_ADDR", "127.0.0.1")
        return app(environ, start_response)

    return Client(from_here)


@dataclass
class Publisher:
    """A fake publish_lookups that records what it was asked to publish."""

    calls: list[list[str]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, trade_nos: Sequence[str]) -> int:
        if self.fail:
            raise ConnectionError("broker down")
        self.calls.append(list(trade_nos))
        return 1


def new_order(ledger: Ledger, state: State = State.PROCESSING, market: str = "ID") -> str:
    """An order of ``market``, in a batch of its own, brought to ``state``."""
    fields = {"amount": "100000", "bankAccountNo": "5464438554636", "bankCode": "0002"}
    currency = {"ID": "IDR", "AR": "ARS", "JP": "JPY", "KH": "USD"}[market]
    payout = Payout(market, currency, Decimal("100000"), None, fields)
    ((trade_no, _),) = ledger.create_orders([payout], batch_id=new_batch_id(), market=market)
    path = {
        State.QUEUED: [],
        State.SUBMITTING: [State.SUBMITTING],
        State.PROCESSING: [State.SUBMITTING, State.PROCESSING],
        State.UNKNOWN: [State.SUBMITTING, State.UNKNOWN],
        State.SUCCEEDED: [State.SUBMITTING, State.PROCESSING, State.SUCCEEDED],
    }[state]
    for target in path:
        assert ledger.transition(trade_no, target, source="submit").moved
    return trade_no


def notification(trade_no: str, status: str = "0000", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "platFormTradeNo": "PT20241130000123",
        "tradeNo": trade_no,
        "amount": "100000",
        "status": status,
        "message": "success",
        "timestamp": "1732985021335",
    }
    body.update(extra)
    return body


def signed(body: dict[str, Any], secret: str = SECRET) -> dict[str, Any]:
    return {**body, "sign": sign(body, secret)}


def state_of(ledger: Ledger, trade_no: str) -> State:
    order = ledger.get(trade_no)
    assert order is not None
    return order.state
