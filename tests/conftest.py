"""The fixtures every test may take live in the plugin ``tests.support.servers``; this
file orders the tests for pytest-xdist (``make test``)."""

from __future__ import annotations

import os
from itertools import groupby

import pytest

pytest_plugins = ["tests.support.servers"]

# The tests run as a deployment that names its public URL (the default only names the
# local web process). A test of the setting itself builds its own environment.
os.environ.setdefault("NOTIFY_URL", "https://disburse.example/notify")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On several xdist processes: the chaos test first (one process spends its minutes
    of timers on it), then each integration module's tests, kept together (a module's
    cluster boots once), spread evenly among the unit modules, so that every process
    starts on a share of the clusters instead of all of them waiting at the end."""
    if not (config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses")):
        return
    modules = [list(tests) for _, tests in groupby(items, key=lambda item: item.path)]
    chaos = [m for m in modules if m[0].get_closest_marker("chaos")]
    clusters = [m for m in modules if m[0].get_closest_marker("integration") and m not in chaos]
    units = [m for m in modules if m not in chaos and m not in clusters]
    ordered = [item for module in chaos for item in module]
    every = max(1, len(units) // max(1, len(clusters)))
    for index, module in enumerate(units):
        if index % every == 0 and clusters:
            ordered += clusters.pop(0)
        ordered += module
    ordered += [item for module in clusters for item in module]
    assert len(ordered) == len(items)
    items[:] = ordered
