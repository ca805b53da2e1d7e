"""Old import path kept only for worker/ledger.py and worker/outbox.py (issue 22: their
split is another branch); removed when the merge points them at worker.core.redact."""

from worker.core.redact import mask_personal, redact

__all__ = ["mask_personal", "redact"]
