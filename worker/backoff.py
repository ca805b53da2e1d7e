"""Old import path kept only for worker/ledger.py and worker/outbox.py (issue 22: their
split is another branch); removed when the merge points them at worker.core.backoff."""

from worker.core.backoff import backoff

__all__ = ["backoff"]
