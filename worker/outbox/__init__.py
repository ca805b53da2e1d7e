"""Outcomes to the application: the event feed over ``order_events``, and signed webhooks.

:mod:`~worker.outbox.events` says which rows are events and what the application sees of
them, :mod:`~worker.outbox.feed` reads them in order without skipping one,
:mod:`~worker.outbox.signature` signs and verifies, :mod:`~worker.outbox.deliveries`
keeps what is to be sent and each attempt, and :mod:`~worker.outbox.sender` POSTs it,
as many at once as :mod:`~worker.outbox.concurrency` allows and, while the endpoint is
dead, one at a time (:mod:`~worker.outbox.breaker`).
"""

from worker.core.defaults import OUTBOX_EVERY
from worker.outbox.deliveries import Deliveries, DeliveryStatus
from worker.outbox.events import EVENT_TYPES, Event, EventType
from worker.outbox.feed import INTAKE, Feed
from worker.outbox.sender import Sender
from worker.outbox.signature import signature_header, verify_webhook

__all__ = [
    "EVENT_TYPES",
    "INTAKE",
    "OUTBOX_EVERY",
    "Deliveries",
    "DeliveryStatus",
    "Event",
    "EventType",
    "Feed",
    "Sender",
    "signature_header",
    "verify_webhook",
]
