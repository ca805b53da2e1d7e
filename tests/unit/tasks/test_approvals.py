"""The beat's release task (tasks.approvals) hands the work to the process's approvals."""

from __future__ import annotations

import pytest

from tasks.approvals import release_due
from worker.celery import runtime


class Released:
    def release_due(self) -> int:
        return 3


def test_the_task_releases_through_the_runtimes_approvals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "approvals", Released)
    assert release_due() == 3
