"""The webhook sender's task: thin; the work is in worker.outbox."""

from __future__ import annotations

from worker.celery import runtime
from worker.celery.app import app
from worker.core.queues import OUTBOX_TASK


# No retry: beat sends the next run within a second, and it takes up where this one was.
@app.task(name=OUTBOX_TASK)
def send_events() -> dict[str, int | bool]:
    """One sending run (beat sends one every second while APP_WEBHOOK_URL is set)."""
    sender = runtime.sender()
    if sender is None:
        return {"ran": False}
    return sender.run().as_dict()
