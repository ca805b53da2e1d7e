"""The fixtures every test may take live in the plugin ``tests.support.servers``."""

from __future__ import annotations

import os

pytest_plugins = ["tests.support.servers"]

# The tests run as a deployment that names its public URL (the default only names the
# local web process). A test of the setting itself builds its own environment.
os.environ.setdefault("NOTIFY_URL", "https://disburse.example/notify")
