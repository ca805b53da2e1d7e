"""Every Celery setting, in one place, from the settings (worker.core.config) and the names of
the tasks and queues (worker.core.queues)."""

from kombu import Queue

from worker.core import defaults
from worker.core.backoff import PUBLISH_RETRY_POLICY
from worker.core.config import get_settings
from worker.core.defaults import CLAIM_CHECK_EVERY
from worker.core.exceptions import ConfigError
from worker.core.queues import (
    CLAIM_CHECK_TASK,
    DEFAULT_QUEUE,
    LOOKUP_TASK,
    OUTBOX_QUEUE,
    OUTBOX_TASK,
    RECONCILE_QUEUE,
    RECONCILE_TASK,
    RELEASE_TASK,
    RESUBMIT_QUEUE,
    SUBMIT_QUEUE,
    SUBMIT_TASK,
)
from worker.outbox import OUTBOX_EVERY

_settings = get_settings()

broker_url: str | None
result_backend: str | None
try:
    broker_url = _settings.broker
    result_backend = _settings.redis_url
except ConfigError:
    # REDIS_URL not set: a worker or beat refuses to start, saying so (worker.celery.signals), and
    # nothing else publishes without the Redis that worker.celery.runtime needs first.
    broker_url = result_backend = None
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

# Celery reads the visibility timeout in both places. Through Sentinels (a sentinel://
# URL), both ask them for the master by its name, and again after a failover.
_visibility = {"visibility_timeout": _settings.visibility_timeout}
_master = {"master_name": _settings.redis_sentinel_master}
broker_transport_options = {
    **_visibility,
    **(_master if broker_url and broker_url.startswith("sentinel://") else {}),
    "queue_order_strategy": "worker.celery.publish:UrgentFirst",
}
result_backend_transport_options = {
    **_visibility,
    **(_master if result_backend and result_backend.startswith("sentinel://") else {}),
}
broker_connection_retry_on_startup = True
# A task's publishes ride through a Redis restart of a few seconds (worker.core.backoff).
task_publish_retry_policy = PUBLISH_RETRY_POLICY
# On a lost broker connection running tasks go on (Celery 6 will cancel them): a submit
# may be in the middle of a POST, and its ack finds Redis again once it is back.
worker_cancel_long_running_tasks_on_connection_loss = False

task_default_queue = DEFAULT_QUEUE
task_queues = tuple(
    Queue(name)
    for name in (SUBMIT_QUEUE, RESUBMIT_QUEUE, RECONCILE_QUEUE, OUTBOX_QUEUE, DEFAULT_QUEUE)
)
task_routes = {
    SUBMIT_TASK: {"queue": SUBMIT_QUEUE},
    LOOKUP_TASK: {"queue": RECONCILE_QUEUE},
    RECONCILE_TASK: {"queue": RECONCILE_QUEUE},
    CLAIM_CHECK_TASK: {"queue": RECONCILE_QUEUE},
    OUTBOX_TASK: {"queue": OUTBOX_QUEUE},
    RELEASE_TASK: {"queue": RECONCILE_QUEUE},
}
imports = ("tasks.submit", "tasks.reconcile", "tasks.outbox", "tasks.approvals")

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
        "task": RECONCILE_TASK,
        "schedule": _settings.reconcile_every,
        "options": {"expires": 10 * _settings.reconcile_every},
    },
}
# Claims whose worker died (their lease expired: worker.flows.heartbeat) looked for every
# CLAIM_CHECK_EVERY s: a pass alone would find them up to an interval late. A check
# finds what the last one left, so the old messages of a busy queue are as good as new.
beat_schedule["claims"] = {
    "task": CLAIM_CHECK_TASK,
    "schedule": CLAIM_CHECK_EVERY,
    "options": {"expires": 10 * CLAIM_CHECK_EVERY},
}
# Webhooks to the application: a sending run every second; one runs at a time (it holds
# a PostgreSQL lock), so the others return at once, and a message older than a few
# intervals is dropped, as the next one does the same work.
if _settings.app_webhook_url:
    beat_schedule["outbox"] = {
        "task": OUTBOX_TASK,
        "schedule": OUTBOX_EVERY,
        "options": {"expires": 10 * OUTBOX_EVERY},
    }
# Held batches whose approvals are complete, released once their schedule, the balance
# and the daily limit allow (worker.flows.approvals; a run while another runs releases
# nothing twice).
beat_schedule["release"] = {
    "task": RELEASE_TASK,
    "schedule": defaults.RELEASE_EVERY,
    "options": {"expires": 4 * defaults.RELEASE_EVERY},
}
