"""The console's app on the session's PostgreSQL and Redis, its users, and a client
that signs in and posts forms with their CSRF token as a browser does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from worker.celery import runtime
from worker.console.app import create_app

PASSWORD = "correct horse battery"
POLICY = """
[markets.ID]
max_payout = "50000000"
approvals = [
  { total_over = "0", approvals = 1 },
  { total_over = "500000000", payout_over = "20000000", approvals = 2 },
]
"""
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(broker: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Flask]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    monkeypatch.setenv("DISBURSE_POLICY", str(policy))
    monkeypatch.setenv("NOTIFY_URL", "https://merchant.example/notify")
    runtime.reset()
    accounts = runtime.accounts()
    for name, role in [
        ("vera", "viewer"),
        ("otto", "operator"),
        ("alice", "approver"),
        ("bob", "approver"),
        ("carol", "approver"),
        ("ada", "admin"),
    ]:
        accounts.add(name, role, PASSWORD, by="test")
    built = create_app()
    yield built
    runtime.reset()


def token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on ``path``, as a browser gets it."""
    page = client.get(path)
    found = _TOKEN.search(page.get_data(as_text=True))
    assert found is not None, page.get_data(as_text=True)
    return found.group(1)


def post(client: FlaskClient, page: str, action: str, **form: Any) -> Any:
    """Submit a form of ``page`` to ``action`` with the page's CSRF token."""
    return client.post(action, data={"csrf_token": token(client, page), **form})


def sign_in(client: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    return post(client, "/signin", "/signin", name=name, password=password)


@pytest.fixture
def signed_in(app: Flask) -> Any:
    def client_of(name: str) -> FlaskClient:
        client = app.test_client()
        assert sign_in(client, name).status_code == 302
        return client

    return client_of
