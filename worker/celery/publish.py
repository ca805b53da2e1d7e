"""Messages to the workers: they carry tradeNos only, never amounts, names or accounts."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Producer
from kombu.exceptions import BatchPublishError
from kombu.utils.scheduling import round_robin_cycle

from worker.core.defaults import LOOKUP_CHUNK, RESUBMIT_CHUNK, SUBMIT_CHUNK
from worker.core.queues import (
    LOOKUP_TASK,
    OUTBOX_QUEUE,
    RECONCILE_QUEUE,
    RESUBMIT_QUEUE,
    SUBMIT_QUEUE,
    SUBMIT_TASK,
)

# The order a worker looks at its queues in on the Redis broker (lower first).
_URGENCY = {RECONCILE_QUEUE: 0, OUTBOX_QUEUE: 0, RESUBMIT_QUEUE: 1}


class UrgentFirst(round_robin_cycle):
    """The order a worker names its queues in when it waits on the Redis broker
    (celeryconfig's ``queue_order_strategy``), which hands it a message from the first
    non-empty one: ``reconcile`` and ``outbox`` (in turn), then ``resubmit``, then
    ``submit``. A process that finishes a task takes a waiting pass, lookup or webhook
    run before more submit work, so a big batch delays them by one submit task at most
    (seconds, with many POSTs in flight per task); their inflow is bounded (a pass per
    interval, a run per second, the lookups that passes and submissions ask for), so
    ``submit`` is never starved. RabbitMQ serves a worker's queues in turn."""

    def consume(self, n: int) -> list[str]:
        return sorted(super().consume(n), key=lambda queue: _URGENCY.get(queue, 2))


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class Publisher:
    """Sends the workers' messages through ``app`` (the composition root hands it in)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def submissions(
        self, trade_nos: Sequence[str], *, countdown: float | None = None, chunk: int = SUBMIT_CHUNK
    ) -> int:
        """Publish submit messages for ``trade_nos`` over one broker connection; returns
        count."""
        return self._publish(SUBMIT_TASK, chunks(trade_nos, chunk), countdown)

    def resubmissions(self, trade_nos: Sequence[str], *, countdown: float | None = None) -> int:
        """Publish orders taken up before, to ``resubmit`` (after ``countdown`` seconds)."""
        return self._publish(
            SUBMIT_TASK, chunks(trade_nos, RESUBMIT_CHUNK), countdown, queue=RESUBMIT_QUEUE
        )

    def lookups(self, trade_nos: Sequence[str], *, countdown: float | None = None) -> int:
        """Ask the provider about these orders (after ``countdown`` seconds)."""
        return self._publish(LOOKUP_TASK, chunks(trade_nos, LOOKUP_CHUNK), countdown)

    def submit_queue_length(self) -> int:
        """Messages waiting in both submit queues (works for Redis and RabbitMQ brokers).

        A queue the broker does not have is empty: Redis deletes an empty list, and a
        passive declare of it then fails with ``NOT_FOUND`` (RabbitMQ answers 404 for a
        queue never declared). Any other failure raises: the length is unknown.
        """
        waiting = 0
        with self.app.connection_for_read() as connection:
            for queue in (SUBMIT_QUEUE, RESUBMIT_QUEUE):
                # A channel per declare: on RabbitMQ a failed passive declare closes it.
                with connection.channel() as channel:
                    try:
                        declared = channel.queue_declare(queue, passive=True)
                    except connection.channel_errors as exc:
                        if "NOT_FOUND" in str(exc) or getattr(exc, "reply_code", None) == 404:
                            continue
                        raise
                    waiting += int(declared.message_count)
        return waiting

    def _publish(
        self,
        task: str,
        arg_lists: list[list[str]],
        countdown: float | None,
        queue: str | None = None,
    ) -> int:
        if not arg_lists:
            return 0
        with self.app.producer_or_acquire() as producer:
            try:
                # On Redis the messages (and their task-sent events) go out in pipelines
                # of a thousand commands, not in two round trips each; RabbitMQ takes
                # each at once.
                with producer.batch():
                    self._send(task, arg_lists, countdown, queue, producer)
            except BatchPublishError:
                # A pipeline failed (the broker went away): which of its messages arrived
                # is unknown, so all go again, one by one, each riding through the outage
                # (task_publish_retry_policy). An order sent twice is claimed once.
                self._send(task, arg_lists, countdown, queue, producer)
        return len(arg_lists)

    def _send(
        self,
        task: str,
        arg_lists: list[list[str]],
        countdown: float | None,
        queue: str | None,
        producer: Producer,
    ) -> None:
        for args in arg_lists:
            self.app.send_task(
                task,
                args=(args,),
                countdown=countdown,
                producer=producer,
                ignore_result=True,
                queue=queue,
            )
