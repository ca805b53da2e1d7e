"""Old import path kept only for worker/ledger.py and worker/outbox.py (issue 22: their
split is another branch); removed when the merge points them at worker.provider.report."""

from worker.provider.report import ProviderReport

__all__ = ["ProviderReport"]
