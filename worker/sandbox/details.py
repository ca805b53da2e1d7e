"""The disbursement-details API (seed 003): OAuth token, one disbursement, the paged list."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request, Response

from worker.sandbox import markets
from worker.sandbox.chance import Fate
from worker.sandbox.config import SandboxConfig
from worker.sandbox.payouts import available_balance
from worker.sandbox.protocol import DETAILS_PENDING, DETAILS_STATUSES
from worker.sandbox.responses import details_error, json_body, json_response, ms_text
from worker.sandbox.state import Payout, State

PARTNER_HEADER = "X-PARTNER-ID"
UNAUTHORIZED = "Unauthorized partner, please sign in"


def _lifetime_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _money(value: Decimal, currency: str) -> dict[str, str]:
    return {"value": f"{value:.2f}", "currency": currency}


class DetailsAPI:
    def __init__(
        self,
        config: SandboxConfig,
        state: State,
        pause: Callable[[float], None],
        delay: Callable[[], float],
    ) -> None:
        self._config = config
        self._state = state
        self._pause = pause
        self._delay = delay  # seconds this answer waits (chance.Latency.draw)

    # --- POST /api/v1.0/access-token/b2b --------------------------------------------------

    def token(self, request: Request) -> Response:
        config, state = self._config, self._state
        self._pause(self._delay())
        auth = request.authorization
        if (
            request.headers.get(PARTNER_HEADER) != config.api_key
            or auth is None
            or auth.type != "basic"
            or auth.username != config.client_id
            or auth.password != config.client_secret
        ):
            state.count("token_rejected")
            return details_error(401, UNAUTHORIZED)
        body = json_body(request)
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            state.count("token_rejected")
            return details_error(
                422,
                "The given data was invalid.",
                {"grant_type": ["grant_type must be client_credentials"]},
            )
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        state.issue_token(token, now + config.token_lifetime, now)
        return json_response(
            {
                "status": 200,
                "success": True,
                "data": {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": _lifetime_text(config.token_lifetime),
                },
            }
        )

    def _unauthorized(self, request: Request) -> Response | None:
        """401 unless the partner id matches and the Bearer token is known and unexpired."""
        if request.headers.get(PARTNER_HEADER) == self._config.api_key:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and self._state.token_valid(
                token.strip(), time.monotonic()
            ):
                return None
        self._state.count("details_unauthorized")
        return details_error(401, UNAUTHORIZED)

    # --- GET /api/v1.0/disbursement(s)/{account_id}/{transaction_id} ----------------------

    def details(self, request: Request, account_id: str, transaction_id: str) -> Response:
        config, state = self._config, self._state
        state.count("details_lookups")
        self._pause(self._delay())
        refusal = self._unauthorized(request)
        if refusal is not None:
            return refusal
        payout = state.get_by_platform(transaction_id) if account_id == config.account_id else None
        if payout is None:
            state.count("details_not_found")
            return details_error(404, "Disbursement not found")
        row = detail_row(payout, config)
        if not config.nested_details:
            return json_response({"status": 200, "success": True, "data": row})
        balance = _money(available_balance(config, state), payout.currency)
        inner = {"status": 200, "success": True, "data": row, "balance_after": balance}
        return json_response({"status": 200, "success": True, "data": inner})

    # --- GET /api/v1.0/disbursement/{account_id}?page=N -----------------------------------

    def listing(self, request: Request, account_id: str) -> Response:
        config, state = self._config, self._state
        number = state.count("list_requests")
        self._pause(self._delay())
        if number == config.revoke_tokens_at_list_request:
            state.revoke_tokens()
        self.arrive_elsewhere(config.list_arrivals)
        refusal = self._unauthorized(request)
        if refusal is not None:
            return refusal
        if account_id != config.account_id:
            return details_error(404, "Account not found")
        raw = request.args.get("page", "1")
        try:
            page = int(raw)
        except ValueError:
            page = 0
        if page < 1:
            return details_error(
                422, "The given data was invalid.", {"page": ["page must be a positive integer"]}
            )
        size = config.page_size
        payouts, total = state.page(page, size)
        body: dict[str, Any] = {
            "status": 200,
            "success": True,
            "data": [detail_row(p, config) for p in payouts],
        }
        last = max(1, math.ceil(total / size))
        style = config.pagination_style
        if style == "pagination":
            body["pagination"] = {
                "current_page": page,
                "total_pages": last,
                "per_page": size,
                "total": total,
            }
        elif style == "meta":
            body["meta"] = {
                "currentPage": page,
                "totalPages": last,
                "perPage": size,
                "total": total,
            }
        elif style == "empty":
            body["pagination"] = {}
        return json_response(body)

    def arrive_elsewhere(self, count: int) -> None:
        """``count`` payouts another system made on this account: at the top of the list,
        never settled here."""
        state = self._state
        for _ in range(count):
            state.accept(
                Payout(
                    trade_no="elsewhere" + secrets.token_hex(11),
                    platform_trade_no=state.new_platform_id(),
                    market="ID",
                    amount="10000",
                    currency="IDR",
                    fields={},
                    received_at=time.time(),
                    fate=Fate(False, 0.0, True, False),
                )
            )
        state.count("list_arrivals", count)


def detail_row(payout: Payout, config: SandboxConfig) -> dict[str, Any]:
    """One disbursement in the details API's shape (seed 003)."""
    amount = Decimal(payout.amount)
    fee = Decimal(config.fee)
    currency = payout.currency
    return {
        "transaction_id": payout.platform_trade_no,
        "status": DETAILS_STATUSES.get(payout.status, DETAILS_PENDING),
        "amount": _money(amount, currency),
        "fees": [{"name": "transfer service fee", **_money(fee, currency)}],
        "total_amount": _money(amount + fee, currency),
        "bank": markets.bank(payout.market, payout.fields),
        "post_timestamp": ms_text(payout.received_at),
        "processed_timestamp": (
            ms_text(payout.settled_at) if payout.settled_at is not None else None
        ),
        "notes": payout.remark,
    }
