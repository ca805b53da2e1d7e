"""The task and queue names: every task is routed, and every queue routed to is consumed."""

from __future__ import annotations

import celeryconfig
from tasks.approvals import release_due
from tasks.outbox import send_events
from tasks.reconcile import check_claims, lookup_orders, reconcile_pass
from tasks.submit import submit_orders
from worker.core.defaults import CLAIM_CHECK_EVERY
from worker.core.queues import RECONCILE_QUEUE, RESUBMIT_QUEUE
from worker.dev.cluster import procfile_commands


def test_every_task_is_routed() -> None:
    tasks = (submit_orders, lookup_orders, reconcile_pass, check_claims, send_events, release_due)
    registered = {task.name for task in tasks}
    assert registered == set(celeryconfig.task_routes)
    assert {entry["task"] for entry in celeryconfig.beat_schedule.values()} <= registered


def test_the_procfile_worker_consumes_every_queue_a_message_is_sent_to() -> None:
    command = procfile_commands()["worker"]
    consumed = set(command[command.index("-Q") + 1].split(","))
    routed = {route["queue"] for route in celeryconfig.task_routes.values()}
    # worker.celery.publish sends orders taken up before to the resubmit queue explicitly.
    assert routed | {RESUBMIT_QUEUE} <= consumed
    assert consumed <= {queue.name for queue in celeryconfig.task_queues}


def test_abandoned_claims_are_looked_for_every_few_seconds_on_the_reconcile_queue() -> None:
    entry = celeryconfig.beat_schedule["claims"]
    assert entry["task"] == check_claims.name and entry["schedule"] == CLAIM_CHECK_EVERY
    assert celeryconfig.task_routes[check_claims.name] == {"queue": RECONCILE_QUEUE}


def test_the_beat_releases_held_batches() -> None:
    assert celeryconfig.beat_schedule["release"]["task"] == release_due.name
