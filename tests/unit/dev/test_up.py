"""`disburse up`'s .env: a second run in the same directory leaves the first one's alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from worker.dev import up


def test_a_running_instance_s_env_file_is_recognised(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    assert up._running_elsewhere(env_file) is None  # none yet
    env_file.write_text(up.env_text({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert up._writer(env_file) == os.getpid()
    assert up._running_elsewhere(env_file) is None  # this process's own

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        text = env_file.read_text().replace(f"(pid {os.getpid()})", f"(pid {other.pid})")
        env_file.write_text(text)
        assert up._running_elsewhere(env_file) == other.pid  # alive: left alone
    finally:
        other.kill()
        other.wait()
    assert up._running_elsewhere(env_file) is None  # gone: the file is stale
