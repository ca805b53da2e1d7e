"""The Celery application; every setting lives in ``celeryconfig``."""

from celery import Celery

app = Celery("disburse")
app.config_from_object("celeryconfig")
