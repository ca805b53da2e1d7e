"""The beat's release of held batches: thin; the work is in worker.flows.approvals."""

from __future__ import annotations

from worker.celery import runtime
from worker.celery.app import app
from worker.core.queues import RELEASE_TASK


# No retry: the beat sends the next run within RELEASE_EVERY, and it finds what this one left.
@app.task(name=RELEASE_TASK)
def release_due() -> int:
    """Release every held batch nothing holds any more; the payouts released."""
    return runtime.approvals().release_due()
