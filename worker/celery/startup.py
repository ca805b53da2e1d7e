"""What a worker, beat or the web receiver says about its configuration when it starts.

It serves the markets that have a provider account and says which those are, and
which are not served and why (a market without an account is refused at enqueue);
whether the details API is configured; and that NOTIFY_URL is not set, when it is not.
It needs DATABASE_URL and REDIS_URL: without them it refuses to start (:func:`servers`).
"""

from __future__ import annotations

import logging

from worker.core.exceptions import ConfigError
from worker.core.settings import DETAILS_SETTINGS, Settings


def servers(settings: Settings) -> None:
    """Raise ConfigError, naming the variable and where it was looked for, unless both
    DATABASE_URL and REDIS_URL are set."""
    settings.database_url  # noqa: B018 - raises when not set
    settings.redis_url  # noqa: B018


def report(settings: Settings, log: logging.Logger, process: str) -> None:
    """Log, once, what ``process`` serves and what it lacks (no secret is named)."""
    try:
        accounts = settings.accounts
    except ConfigError as exc:  # two markets configured as one account two ways
        log.error("%s: %s", process, exc)
        return
    if accounts:
        served = ", ".join(f"{a.name} (merchant {a.merchant_no})" for a in accounts)
        log.info("%s serves markets %s", process, served)
    else:
        log.error("%s serves no market: no provider account is configured", process)
    for market in settings.unavailable:
        try:
            settings.account(market)
        except ConfigError as exc:
            log.warning("%s does not serve market %s: %s", process, market, exc)
    if not settings.details_configured:
        log.warning(
            "%s: the details API is not configured (%s): reconciliation asks the payout "
            "API's status query only; fees, and failures after success (reversals), are "
            "not seen",
            process,
            ", ".join(DETAILS_SETTINGS),
        )
    if not settings.notify_url_set:
        log.warning(
            "%s: NOTIFY_URL is not set: payouts name %s as their notifyUrl, which the "
            "provider cannot reach; set it to the public URL of this system's receiver",
            process,
            settings.notify_url,
        )
