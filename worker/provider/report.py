"""What the provider says about one payout, from any source (submit answer, webhook,
lookup, the details list), in the provider's neutral terms: what the ledger applies."""

from __future__ import annotations

from dataclasses import dataclass

from worker.core.states import State


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """What the provider says about one payout, from any source: what the ledger applies."""

    state: State
    platform_trade_no: str | None
    status: str  # the provider's own word, e.g. "0015" or "success"
    message: str
