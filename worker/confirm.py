"""Old import path kept only for worker/ledger.py and worker/outbox.py (issue 22: their
split is another branch); removed when the merge points them at worker.core.confirm."""

from worker.core.confirm import needs_confirmation

__all__ = ["needs_confirmation"]
