"""The sandbox's HTTP server: slow answers are served side by side, never one by one."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.unit.sandbox.test_sandbox import fields_for, signed
from worker.sandbox import Sandbox, SandboxConfig

CLIENTS = 200


@pytest.fixture
def slow_sandbox() -> Iterator[Sandbox]:
    config = SandboxConfig(latency_median=0.25, latency_sigma=0.6, webhooks=False, seed=3)
    sandbox = Sandbox(config).start()
    yield sandbox
    sandbox.stop()


def test_hundreds_of_slow_requests_wait_out_their_latency_at_the_same_time(
    slow_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request, once it has drawn its latency, waits at a barrier all of them must
    # reach: a server that answered one request at a time, or a wait that held the
    # sandbox's lock, would leave the barrier short and break it (answered HTTP 500).
    barrier = threading.Barrier(CLIENTS, timeout=30)
    waits: list[float] = []
    pause = slow_sandbox.payout_api._pause

    def wait_at_the_barrier(seconds: float) -> None:
        waits.append(seconds)
        barrier.wait()
        pause(seconds)

    monkeypatch.setattr(slow_sandbox.payout_api, "_pause", wait_at_the_barrier)
    secret = slow_sandbox.config.app_secret
    url = slow_sandbox.url + "/v1/vexora/disbursements"
    headers = {"merchantNo": slow_sandbox.config.merchant_no}
    codes: list[int] = []

    def submit() -> None:
        body = signed(fields_for("ID", uuid.uuid4().hex), secret)
        codes.append(requests.post(url, json=body, headers=headers, timeout=60).status_code)

    clients = [threading.Thread(target=submit) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert codes == [200] * CLIENTS
    assert slow_sandbox.stats()["payouts"] == CLIENTS
    assert len(set(waits)) == CLIENTS  # each request its own draw
