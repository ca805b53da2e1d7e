"""Old import path kept only for worker/ledger.py and worker/outbox.py (issue 22: their
split is another branch); removed when the merge points them at worker.provider.http_client."""

from worker.provider.http_client import pooled_session

__all__ = ["pooled_session"]
