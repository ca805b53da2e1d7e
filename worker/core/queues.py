"""The names the broker knows, spelled here only: the tasks, and the queues they go to.

``celeryconfig`` routes the tasks to the queues, ``tasks/`` registers them under
these names, :mod:`worker.celery.publish` sends them; the Procfile's worker line consumes
the queues.
"""

SUBMIT_TASK = "disburse.submit"
LOOKUP_TASK = "disburse.lookup"
RECONCILE_TASK = "disburse.reconcile"
CLAIM_CHECK_TASK = "disburse.claim_check"

# First submissions wait their turn in ``submit``, in row order. Every order a task
# took up before (the rest of a chunk handed on, a retry, an order whose task died, one
# the provider has no record of) goes to ``resubmit``, which every worker consumes
# before ``submit`` (worker.celery.publish.UrgentFirst), so such an order never waits behind a
# big batch still queued. Its inflow is bounded by what the workers took up, so
# ``submit`` is never starved.
SUBMIT_QUEUE = "submit"
RESUBMIT_QUEUE = "resubmit"
# The reconcile pass, the claim check and the lookups, consumed first of all (with
# ``outbox``), so that they never wait behind a big batch.
RECONCILE_QUEUE = "reconcile"
# Where a task without a route would go: every task has one.
DEFAULT_QUEUE = "default"

# Outcomes to the application (worker.outbox): the webhook sender, on a queue of its own
# so that a slow application endpoint never holds up submissions or reconciliation.
OUTBOX_TASK = "disburse.outbox"
OUTBOX_QUEUE = "outbox"

# The beat's release of held batches nothing holds any more (worker.flows.approvals), on
# the reconcile queue.
RELEASE_TASK = "disburse.release"
