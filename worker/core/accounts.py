"""Provider accounts: which markets have one, and which account each market pays through.

No account has a built-in value. A market is available when its own
``VEXORA_<MARKET>_*`` values, each falling back to the plain ``VEXORA_*`` one, name a
base URL, a merchant number and a secret; for any other market nothing is enqueued or
sent, and :func:`unavailable` says which settings to set. (The settings themselves are
read in :mod:`worker.core.config`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from schemas import MARKETS
from worker.core.exceptions import ConfigError, MarketUnavailable

if TYPE_CHECKING:
    from worker.core.settings import Rate

# What a market's account needs, as VEXORA_<MARKET>_<NAME> and VEXORA_<NAME>.
REQUIRED = ("BASE_URL", "MERCHANT_NO", "APP_SECRET")


@dataclass(frozen=True)
class Account:
    """One account at the payout provider: the markets it serves, where and as whom to
    call, and how fast.

    Markets configured with the same base URL and merchant number share one Account,
    because at the provider they are one account: one secret, one rate limit, one
    pause switch, one balance.
    """

    markets: tuple[str, ...]
    base_url: str
    merchant_no: str
    app_secret: str = field(repr=False)
    rate_limit: Rate

    @property
    def name(self) -> str:
        """Its markets, e.g. ``AR`` or ``ID+JP+KH``: in Redis keys, logs and the CLI."""
        return "+".join(self.markets)


@dataclass(frozen=True)
class MarketAccount:
    """What ``VEXORA_<MARKET>_*`` set for one market (or, as the plain values, what
    ``VEXORA_*`` set); None (or "") is not set."""

    base_url: str | None = None
    merchant_no: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    rate_limit: Rate | None = None


def resolve(
    own: Mapping[str, MarketAccount], plain: MarketAccount, default_rate: Rate
) -> tuple[Account, ...]:
    """The account of every available market; markets alike share one.

    Raises ConfigError when two markets name the same account (base URL and merchant
    number) with different secrets or rate limits.
    """
    found: dict[tuple[str, str], Account] = {}
    for market in MARKETS:
        mine = own.get(market, MarketAccount())
        base_url = mine.base_url or plain.base_url
        merchant_no = mine.merchant_no or plain.merchant_no
        app_secret = mine.app_secret or plain.app_secret
        if not (base_url and merchant_no and app_secret):
            continue  # unavailable
        rate = mine.rate_limit or plain.rate_limit or default_rate
        account = Account((market,), base_url, merchant_no, app_secret, rate)
        shared = found.get((base_url, merchant_no))
        if shared is None:
            found[(base_url, merchant_no)] = account
            continue
        if account.app_secret != shared.app_secret:
            what, setting = "app secret", "APP_SECRET"
        elif account.rate_limit.per_second != shared.rate_limit.per_second:
            what, setting = "rate limit", "RATE_LIMIT"
        else:
            found[(base_url, merchant_no)] = replace(shared, markets=(*shared.markets, market))
            continue
        raise ConfigError(
            f"{_own_variable(own, setting, (market, *shared.markets))}: markets {market} "
            f"and {shared.name} have the same base URL and merchant number, so one "
            f"provider account, but not the same {what}; give {market} its own "
            f"VEXORA_{market}_MERCHANT_NO, or the same {what}"
        )
    return tuple(found.values())


def unavailable(
    market: str, own: Mapping[str, MarketAccount], plain: MarketAccount
) -> MarketUnavailable:
    """The error for ``market``, which has no complete account: the settings it lacks."""
    mine = own.get(market, MarketAccount())
    missing = [
        name
        for name in REQUIRED
        if not (getattr(mine, name.lower()) or getattr(plain, name.lower()))
    ]
    return MarketUnavailable(
        market, [f"VEXORA_{market}_{name}" for name in missing], [f"VEXORA_{n}" for n in missing]
    )


def _own_variable(own: Mapping[str, MarketAccount], setting: str, markets: tuple[str, ...]) -> str:
    """The first ``VEXORA_<MARKET>_<SETTING>`` set among ``markets``."""
    attribute = setting.lower()
    for market in markets:
        if getattr(own.get(market), attribute, None) is not None:
            return f"VEXORA_{market}_{setting}"
    return f"VEXORA_{setting}"
