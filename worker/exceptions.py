"""Old import path kept only for worker/ledger.py and worker/outbox.py (issue 22: their
split is another branch); removed when the merge points them at worker.core.exceptions."""

from worker.core.exceptions import AlreadyRetried

__all__ = ["AlreadyRetried"]
