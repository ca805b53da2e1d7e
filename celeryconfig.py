"""Every Celery setting, in one place, derived from the environment (worker.config)."""

from kombu import Queue

from worker.config import get_settings
from worker.publish import RESUBMIT_QUEUE, SUBMIT_QUEUE
from worker.retry import MAX_DELAY, PUBLISH_RETRY_POLICY

_settings = get_settings()

broker_url = _settings.broker
result_backend = _settings.redis_url
# The ledger is the record of every payout; task results would only duplicate it.
task_ignore_result = True
result_expires = 3600

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# At-least-once delivery; the ledger's claim makes a second delivery harmless.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_time_limit = int(_settings.task_time_limit)
task_soft_time_limit = int(_settings.task_time_limit) - 10

# A message the Redis broker handed to a worker comes back to the queue when no ack
# came within this long: its worker died, or the ack could not reach a Redis that was
# down. So it must outlast the longest a message is held by a live worker: a countdown
# (at most retry.MAX_DELAY), a wait for a free process (at most one task) and its own
# run (at most the time limit), with a minute to spare; and it should not be much
# longer, as it bounds how long such a message waits. Orders of a dead submit task are
# taken up sooner, through their leases (worker.leases). Celery reads it in both places.
_visibility = {"visibility_timeout": int(MAX_DELAY + 2 * task_time_limit + 60)}
broker_transport_options = {**_visibility, "queue_order_strategy": "worker.publish:ResubmitFirst"}
result_backend_transport_options = _visibility
broker_connection_retry_on_startup = True
# A task's publishes ride through a Redis restart of a few seconds (retry.py).
task_publish_retry_policy = PUBLISH_RETRY_POLICY
# On a lost broker connection running tasks go on (Celery 6 will cancel them): a submit
# may be in the middle of a POST, and its ack finds Redis again once it is back.
worker_cancel_long_running_tasks_on_connection_loss = False

task_default_queue = "default"
task_queues = (Queue(SUBMIT_QUEUE), Queue(RESUBMIT_QUEUE), Queue("reconcile"), Queue("default"))
task_routes = {
    "disburse.submit": {"queue": SUBMIT_QUEUE},
    "disburse.lookup": {"queue": "reconcile"},
    "disburse.reconcile": {"queue": "reconcile"},
}
imports = ("tasks.submit", "tasks.reconcile")

# Warm shutdown first lets running tasks finish; soft shutdown gives them this long more.
worker_soft_shutdown_timeout = 15.0
worker_enable_soft_shutdown_on_idle = True
worker_max_tasks_per_child = 10000

# Task events on, so Flower works unchanged.
worker_send_task_events = True
task_send_sent_event = True

# While a big batch keeps every process busy with submit tasks, pass messages wait in
# the reconcile queue, and a worker takes the oldest first: were they to expire within
# one interval, every one taken would have expired, and no pass would run until the
# batch is done. A pass works on the state it finds, so an old message is as good as a
# new one, and one taken less than an interval after the last pass does nothing; they
# expire only so that a cluster down for a long time does not find hundreds queued.
beat_schedule = {
    "reconcile": {
        "task": "disburse.reconcile",
        "schedule": _settings.reconcile_every,
        "options": {"expires": 10 * _settings.reconcile_every},
    },
}
