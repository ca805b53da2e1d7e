"""The use cases: producer, submit, lookup, walk, reconcile, decisions, controls; each
handed its dependencies (worker.celery.runtime wires them)."""
