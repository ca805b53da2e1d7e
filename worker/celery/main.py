"""What the Procfile's worker and beat lines load (``celery -A worker.celery.main``): the
Celery app with its signal hookups connected."""

from worker.celery import signals  # noqa: F401 - connects the hookups
from worker.celery.app import app

__all__ = ["app"]
