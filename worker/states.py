"""Old import path kept only for worker/ledger.py and worker/outbox.py (issue 22: their
split is another branch); removed when the merge points them at worker.core.states."""

from worker.core.states import ALLOWED_FROM, FINAL_STATES, SETTLED_STATES, Outcome, State

__all__ = ["ALLOWED_FROM", "FINAL_STATES", "SETTLED_STATES", "Outcome", "State"]
