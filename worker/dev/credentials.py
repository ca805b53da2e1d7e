"""The settings that point this system at the sandbox provider, with the sandbox's own
credentials: written once, here, for the demo, ``disburse up``, the local cluster,
the sandbox's own start-up lines and the tests.

No setting has a built-in credential or server address (worker.core.config): these are
handed in explicitly, and only ever name the sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from worker.core.config import load_settings
from worker.core.settings import Settings
from worker.sandbox import config as sandbox

# Where no sandbox runs (unit tests that never call it): a port nothing listens on.
NOWHERE = "http://127.0.0.1:9"


def sandbox_env(url: str = NOWHERE, config: sandbox.SandboxConfig | None = None) -> dict[str, str]:
    """The environment of processes that use the sandbox at ``url`` (with ``config``'s
    credentials; None: its defaults) as their payout provider and details API, in
    every market."""
    config = config or sandbox.SandboxConfig()
    return {
        "VEXORA_BASE_URL": url,
        "VEXORA_MERCHANT_NO": config.merchant_no,
        "VEXORA_APP_SECRET": config.app_secret,
        "DETAILS_BASE_URL": url,
        "DETAILS_API_KEY": config.api_key,
        "DETAILS_CLIENT_ID": config.client_id,
        "DETAILS_CLIENT_SECRET": config.client_secret,
        "DETAILS_ACCOUNT_ID": config.account_id,
    }


def sandbox_settings(
    url: str = NOWHERE, env: Mapping[str, str] | None = None, **fields: Any
) -> Settings:
    """Settings with the sandbox's account in every market (and its details API), from
    :func:`sandbox_env` and ``env``, then ``fields`` replaced."""
    settings = load_settings({**sandbox_env(url), **(env or {})})
    return replace(settings, **fields) if fields else settings
