"""Reading the details API's paged list the way the reconcile walk does (page after
page while ``ListPage.more``), for tests of the pagination itself."""

from __future__ import annotations

from worker.provider.details import DetailsClient, Throttle
from worker.provider.disbursements import Disbursement


def every_row(
    client: DetailsClient, start_page: int = 1, *, throttle: Throttle | None = None
) -> list[Disbursement]:
    """Every row from ``start_page`` on, until a page that says it is the last."""
    found: list[Disbursement] = []
    number = start_page
    while True:
        page = client.page(number, throttle=throttle) if throttle else client.page(number)
        found += page.rows
        if not page.more:
            return found
        number += 1
