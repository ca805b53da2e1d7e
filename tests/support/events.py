"""What the application sees of each payout: the states it went through, read from the
ledger's history, and every event of them delivered to a receiver."""

from __future__ import annotations

from tests import ledger_reads
from tests.app_receiver import AppReceiver
from tests.support.waiting import wait_for
from worker.ledger import Ledger


def went_through(ledger: Ledger, trade_no: str) -> list[str]:
    """The states an order went through as the application sees them, read from its
    history: sending and not knowing are steps of QUEUED; a report recorded but not
    applied is no step."""
    path: list[str] = []
    for _, entry in ledger_reads.history(ledger, trade_no):
        state = entry.split(" ", 1)[0]
        if state == "DISCREPANCY":
            continue
        state = "QUEUED" if state in ("SUBMITTING", "UNKNOWN") else state
        if not path or path[-1] != state:
            path.append(state)
    return path


def states_went_through(ledger: Ledger, batch_ids: list[str]) -> dict[str, list[str]]:
    return {
        trade_no: went_through(ledger, trade_no)
        for batch_id in batch_ids
        for page in ledger.iter_batch(batch_id)
        for trade_no in page
    }


def assert_delivered(app: AppReceiver, expected: dict[str, list[str]], timeout: float) -> None:
    """Every payout's events acknowledged, each payout's in the order it went through."""

    def differences() -> dict[str, tuple[list[str], list[str] | None]]:
        got = app.states()
        return {t: (p, got.get(t)) for t, p in expected.items() if got.get(t) != p}

    wait_for(
        "every event delivered",
        lambda: not differences(),
        timeout,
        interval=0.5,
        seen=lambda: list(differences().items())[:10],
    )
    assert set(app.states()) == set(expected)
