"""Every Celery setting, in one place, derived from the environment (worker.config)."""

from kombu import Queue

from worker.config import get_settings

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

# Longer than any task runs or any retry waits (retry.MAX_DELAY), or Redis would hand an
# unacknowledged message to a second worker. Celery reads it in both places.
_visibility = {"visibility_timeout": 4 * 3600}
broker_transport_options = _visibility
result_backend_transport_options = _visibility
broker_connection_retry_on_startup = True

task_default_queue = "default"
task_queues = (Queue("submit"), Queue("reconcile"), Queue("default"))
task_routes = {
    "disburse.submit": {"queue": "submit"},
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

beat_schedule = {
    "reconcile": {
        "task": "disburse.reconcile",
        "schedule": _settings.reconcile_every,
        "options": {"expires": _settings.reconcile_every},
    },
}
