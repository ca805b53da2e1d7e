"""A Chromium for the console's browser tests: ``CHROMIUM_PATH``, else Playwright's own
download, else the system's (``chromium`` on PATH; `.ci/run` installs Debian's). None
found fails the test with one line: a browser test never skips silently."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Playwright

MISSING = (
    "no Chromium for the console's browser tests: set CHROMIUM_PATH, run "
    "`playwright install chromium`, or install the system's (`apt-get install chromium`)"
)


def chromium_path(playwright: Playwright) -> str:
    given = os.environ.get("CHROMIUM_PATH")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"CHROMIUM_PATH={given} is no file", pytrace=False)
        return given
    own = playwright.chromium.executable_path
    if own and Path(own).is_file():
        return own
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(MISSING, pytrace=False)
