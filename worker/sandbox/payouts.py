"""The payout API: disbursements, queryPayOutResult, queryBalance (seeds 000/001/002/004).

Every answer is HTTP 200 with the provider's two-layer JSON, except the faults the
knobs ask for (HTTP 429 over the rate ceiling, HTTP 500, an answer never sent). The
codes for a repeated tradeNo and for a query of an unknown one are knobs too: the
provider documents neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request, Response

from worker.sandbox import chance, markets
from worker.sandbox.config import SandboxConfig
from worker.sandbox.protocol import (
    CODE_BAD_SIGN,
    CODE_RATE_LIMITED,
    CODE_REQUEST_FAILED,
    CODE_SYSTEM_ERROR,
    CODE_UNKNOWN_MERCHANT,
    MERCHANT_HEADER,
    SIGN_FIELD,
    STATUS_MESSAGES,
    STATUS_PROCESSING,
    STATUS_SUCCEEDED,
    verify,
)
from worker.sandbox.responses import (
    DropConnection,
    json_body,
    json_response,
    ms_text,
    now_ms,
    vexora_error,
    vexora_ok,
)
from worker.sandbox.settlement import Settlement
from worker.sandbox.state import Payout, State


class PayoutAPI:
    def __init__(
        self,
        config: SandboxConfig,
        state: State,
        settlement: Settlement,
        nonce: str,
        pause: Callable[[float], None],
        delay: Callable[[], float],
    ) -> None:
        self._config = config
        self._state = state
        self._settlement = settlement
        self._nonce = nonce
        self._pause = pause  # an interruptible sleep: stop() cuts latency and hangs short
        self._delay = delay  # seconds this answer waits (chance.Latency.draw)

    # --- shared checks ------------------------------------------------------------------

    def _refusal(self, request: Request, body: Any) -> Response | None:
        """4002 unknown merchantNo, 8000 body not an object, 4001 not signed with that
        merchant's secret; None when fine."""
        secret = self._config.secret_of(_merchant(request))
        if secret is None:
            self._state.count("unknown_merchant")
            return vexora_error(CODE_UNKNOWN_MERCHANT, "merchant does not exist")
        if not isinstance(body, dict):
            self._state.count("invalid_requests")
            return vexora_error(CODE_REQUEST_FAILED, "request body must be a JSON object")
        if not verify(body, secret):
            self._state.count("bad_sign")
            return vexora_error(CODE_BAD_SIGN, "sign error")
        return None

    def _invalid(self, message: str) -> Response:
        self._state.count("invalid_requests")
        return vexora_error(CODE_REQUEST_FAILED, message)

    # --- POST /v1/vexora/disbursements ----------------------------------------------------

    def disburse(self, request: Request, market: str | None = None) -> Response:
        config, state = self._config, self._state
        merchant = _merchant(request)
        account = merchant if config.secret_of(merchant) is not None else ""
        allowed = state.payout_post_arrived(
            time.monotonic(), config.rate_ceiling_of(account), account
        )
        self._pause(self._delay())
        if not allowed:
            return json_response(
                {
                    "msg": "Too Many Requests",
                    "code": CODE_RATE_LIMITED,
                    "success": False,
                    "timestamp": now_ms(),
                    "data": None,
                },
                status=429,
                headers={"Retry-After": "1"},
            )
        body = json_body(request)
        trade_no = body.get("tradeNo") if isinstance(body, dict) else None
        attempt = state.count_post(trade_no) if isinstance(trade_no, str) and trade_no else 0

        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        not_text = sorted(k for k, v in body.items() if not isinstance(v, str))
        if not_text:
            return self._invalid(f"every value must be a string: {', '.join(not_text)}")
        fields: dict[str, str] = {k: v for k, v in body.items() if k != SIGN_FIELD}
        market_code = markets.detect(market, fields)
        if market_code is None:
            return self._invalid(
                "cannot tell the market: no bankAccountNo, accountNo, userId or channelCode"
            )
        found = markets.problems(market_code, fields)
        if found:
            return self._invalid("; ".join(found))
        trade_no = fields["tradeNo"]

        fault = chance.fault(config, self._nonce, trade_no, attempt)
        if fault == chance.FAULT_ERROR_BEFORE:
            state.count("errors_before_record")
            return vexora_error(CODE_SYSTEM_ERROR, "system error", http_status=500)

        generation = state.generation
        payout = Payout(
            trade_no=trade_no,
            platform_trade_no=state.new_platform_id(),
            market=market_code,
            amount=fields["amount"],
            currency=markets.currency(market_code, fields),
            fields=fields,
            received_at=time.time(),
            fate=chance.fate(config, self._nonce, trade_no),
            merchant_no=merchant,
        )
        if not state.accept(payout):
            return vexora_error(config.repeat_code, "tradeNo already exists")
        self._settlement.schedule(payout, generation)

        if fault == chance.FAULT_ERROR_AFTER:
            state.count("errors_after_record")
            return vexora_error(CODE_SYSTEM_ERROR, "system error", http_status=500)
        if fault == chance.FAULT_HANG:
            state.count("hangs")
            self._pause(config.hang_seconds)
            raise DropConnection("sandbox hang: closing without an answer")

        data = {
            "tradeNo": trade_no,
            "platFormTradeNo": payout.platform_trade_no,
            "status": STATUS_PROCESSING,
            ("desc" if market_code == "ID" else "message"): STATUS_MESSAGES[STATUS_PROCESSING],
            "remark": payout.remark,
        }
        return vexora_ok(data)

    # --- POST /v1/vexora/queryPayOutResult ------------------------------------------------

    def query(self, request: Request, market: str | None = None) -> Response:
        self._state.count("query_requests")
        self._pause(self._delay())
        body = json_body(request)
        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        trade_no = body.get("tradeNo")
        if not isinstance(trade_no, str) or not trade_no:
            return self._invalid("tradeNo is required")
        payout = self._state.get(trade_no)
        stale = payout is not None and time.time() - payout.received_at < self._config.query_lag
        # Another merchant's payout is not this merchant's to see.
        if payout is None or stale or payout.merchant_no != _merchant(request):
            self._state.count("query_not_found")
            return vexora_error(self._config.not_found_code, "order not found")
        return vexora_ok(query_data(payout))

    # --- POST /v1/vexora/queryBalance -----------------------------------------------------

    def balance(self, request: Request, market: str | None = None) -> Response:
        self._state.count("balance_requests")
        self._pause(self._delay())
        body = json_body(request)
        refusal = self._refusal(request, body)
        if refusal is not None:
            return refusal
        return vexora_ok(balance_data(self._config, self._state))


def _merchant(request: Request) -> str:
    return request.headers.get(MERCHANT_HEADER) or ""


def query_data(payout: Payout) -> dict[str, Any]:
    """``data`` of a query answer; JP reports orderAmount/payAmount, the others amount."""
    data: dict[str, Any] = {
        "tradeNo": payout.trade_no,
        "platFormTradeNo": payout.platform_trade_no,
        "status": payout.status,
        "message": payout.message,
    }
    if payout.market == "JP":
        data["orderAmount"] = payout.amount
        data["payAmount"] = payout.amount
    else:
        data["amount"] = payout.amount
    if payout.remark:
        data["remark"] = payout.remark
    if payout.status == STATUS_SUCCEEDED and payout.settled_at is not None:
        data["successTime"] = ms_text(payout.settled_at)
    return data


def available_balance(config: SandboxConfig, state: State) -> Decimal:
    succeeded, _ = state.totals()
    return Decimal(config.balance) - succeeded


def balance_data(config: SandboxConfig, state: State) -> dict[str, str]:
    _, pending = state.totals()
    return {
        "availableAmount": f"{available_balance(config, state):.2f}",
        "freezeAmount": f"{pending:.2f}",
        "unsettledAmount": "0.00",
    }
