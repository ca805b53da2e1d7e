"""The composition root: the Celery app and its signals, publishing, the wiring
(runtime), start-up checks."""
