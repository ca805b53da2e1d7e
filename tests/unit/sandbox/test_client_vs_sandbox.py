"""The client against the sandbox (in-process, free port): two vocabularies must agree.

The client's codes, statuses and signature (worker.provider.answers,
worker.core.signing) and the sandbox's (worker.sandbox.protocol) are written separately,
each from the provider documents; a wrong code or signing rule on either side fails here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core import signing
from worker.core.exceptions import (
    AlreadySubmitted,
    ConfigurationRejected,
    NotFound,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    Rejected,
)
from worker.core.states import State
from worker.provider.vexora import VexoraClient
from worker.sandbox import Sandbox, SandboxConfig, protocol
from worker.sandbox.webhooks import webhook_body

# A valid ID payout (seed 000), every value a string as the client sends it.
ID_FIELDS = {
    "amount": "100000",
    "bankAccountNo": "5464438554636",
    "bankCode": "0002",
    "customerName": "jack",
    "email": "user@example.com",
    "mobile": "6281245907765",
    "notifyUrl": "http://127.0.0.1:9/notify",
}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Payouts settle only when the test says so (settle_now).
    config = SandboxConfig(settle_delay=(600.0, 600.0), failure_ratio=0.0, webhooks=False, seed=3)
    with Sandbox(config) as running:
        yield running


def client_of(
    sandbox: Sandbox, merchant: str | None = None, secret: str | None = None
) -> VexoraClient:
    config = sandbox.config
    return VexoraClient(
        sandbox.url + "/id",
        config.merchant_no if merchant is None else merchant,
        config.app_secret if secret is None else secret,
        timeouts=(2.0, 10.0),
    )


@pytest.mark.parametrize(
    ("failure_ratio", "final_status", "final_state"),
    [
        (0.0, protocol.STATUS_SUCCEEDED, State.SUCCEEDED),
        (1.0, protocol.STATUS_FAILED, State.FAILED),
    ],
)
def test_every_documented_status_means_the_same_state_on_both_sides(
    sandbox: Sandbox, failure_ratio: float, final_status: str, final_state: State
) -> None:
    sandbox.configure(failure_ratio=failure_ratio)
    with client_of(sandbox) as client:
        submitted = client.submit(ID_FIELDS, "agree1")
        assert (submitted.status, submitted.state) == (protocol.STATUS_PROCESSING, State.PROCESSING)
        queried = client.query("agree1")
        assert (queried.status, queried.state) == (protocol.STATUS_PROCESSING, State.PROCESSING)
        assert client.balance().frozen == Decimal("100000")

        assert sandbox.settle_now() == 1
        settled = client.query("agree1")
        assert (settled.status, settled.state) == (final_status, final_state)
        assert settled.platform_trade_no == submitted.platform_trade_no
        assert settled.amount == Decimal("100000")
        assert settled.message == protocol.STATUS_MESSAGES[final_status]

    # The webhook of the settled payout carries the same status, signed as the client checks.
    payout = sandbox.state.get("agree1")
    assert payout is not None
    body = webhook_body(payout, sandbox.config.app_secret)
    assert body["status"] == final_status
    assert signing.verify(body, sandbox.config.app_secret)


def _repeat(client: VexoraClient) -> None:
    client.submit(ID_FIELDS, "repeat1")
    client.submit(ID_FIELDS, "repeat1")


@pytest.mark.parametrize(
    ("knobs", "account", "call", "error", "code"),
    [
        pytest.param(
            {}, {}, _repeat, AlreadySubmitted, protocol.CODE_DUPLICATE_TRADE_NO, id="repeat"
        ),
        pytest.param(
            {},
            {},
            lambda c: c.query("neversent"),
            NotFound,
            protocol.CODE_ORDER_NOT_FOUND,
            id="unknown-tradeNo",
        ),
        pytest.param(
            {},
            {},
            lambda c: c.submit({**ID_FIELDS, "amount": "-5"}, "negative1"),
            Rejected,
            protocol.CODE_REQUEST_FAILED,
            id="invalid",
        ),
        pytest.param(
            {},
            {"secret": "not-the-secret"},
            lambda c: c.balance(),
            ConfigurationRejected,
            protocol.CODE_BAD_SIGN,
            id="bad-sign",
        ),
        pytest.param(
            {},
            {"merchant": "M-UNKNOWN"},
            lambda c: c.query("anything"),
            ConfigurationRejected,
            protocol.CODE_UNKNOWN_MERCHANT,
            id="unknown-merchant",
        ),
        pytest.param(
            {"error_ratio": 1.0, "error_after_record_share": 0.0},
            {},
            lambda c: c.submit(ID_FIELDS, "error1"),
            OutcomeUnknown,
            None,
            id="system-error",
        ),
        pytest.param(
            {"rate_ceiling": 0.5},  # below one POST a second: the first is refused
            {},
            lambda c: c.submit(ID_FIELDS, "limited1"),
            RateLimited,
            None,
            id="rate-limited",
        ),
    ],
)
def test_every_refusal_of_the_sandbox_is_the_error_the_client_expects(
    sandbox: Sandbox,
    knobs: dict[str, Any],
    account: dict[str, str],
    call: Callable[[VexoraClient], object],
    error: type[ProviderError],
    code: str | None,
) -> None:
    sandbox.configure(**knobs)
    with client_of(sandbox, **account) as client, pytest.raises(error) as raised:
        call(client)
    assert type(raised.value) is error
    if code is not None:
        assert raised.value.code == code


texts = st.text(max_size=24)
bodies = st.dictionaries(st.text(min_size=1, max_size=12), texts, max_size=10)


@settings(max_examples=200, deadline=None)
@given(bodies, st.text(min_size=1, max_size=32))
def test_the_client_and_the_sandbox_sign_every_body_alike(
    body: dict[str, str], secret: str
) -> None:
    signature = signing.sign(body, secret)
    assert protocol.sign(body, secret) == signature
    assert protocol.verify({**body, "sign": signature}, secret)
