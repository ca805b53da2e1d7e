"""The stand-in for the details client when the details API is not configured.

The details API's settings have no built-in values (worker.core.config). Without them
nothing is asked of it: a lookup asks the payout API's status query by tradeNo (as
for a transaction the details API does not know), the reconcile pass makes single
lookups instead of walking the paged list, and a failure reported after success is
left for the details API to confirm once it is configured (worker.flows.lookup). Each process
says so once at start (worker.celery.startup).
"""

from __future__ import annotations

from worker.core.exceptions import NotFound
from worker.core.settings import DETAILS_SETTINGS
from worker.provider.details import Throttle
from worker.provider.disbursements import Disbursement


class DetailsNotConfigured(NotFound):
    """The details API was not asked: its settings are not set."""


class NoDetailsApi:
    """Answers every details request with :class:`DetailsNotConfigured`, sending nothing."""

    def details(
        self, transaction_id: str, page: int | None = None, *, throttle: Throttle | None = None
    ) -> Disbursement:
        raise DetailsNotConfigured(
            f"the details API is not configured ({', '.join(DETAILS_SETTINGS)})"
        )

    def __repr__(self) -> str:
        return "NoDetailsApi()"
