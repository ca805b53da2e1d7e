"""The sandbox provider over real HTTP (in-process, free port), with plain ``requests``.

Nothing of the client is used: the codes and the signature are the sandbox's own
(worker.sandbox.protocol, checked here against PROVIDERS.md), everything else is
checked against the seeds' shapes directly. test_client_vs_sandbox.py runs the
client against the sandbox.
"""

from __future__ import annotations

import ast
import graphlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from worker.dev.redis_server import free_port
from worker.sandbox import Sandbox, SandboxConfig, SandboxConfigError, add_arguments
from worker.sandbox.protocol import (
    ACCEPTED,
    CODE_BAD_SIGN,
    CODE_DUPLICATE_TRADE_NO,
    CODE_ORDER_NOT_FOUND,
    CODE_REQUEST_FAILED,
    CODE_UNKNOWN_MERCHANT,
    STATUS_FAILED,
    STATUS_PROCESSING,
    STATUS_SUCCEEDED,
    sign,
    sign_text,
    verify,
)
from worker.sandbox.state import State
from worker.sandbox.webhooks import check_url

REPO = Path(__file__).resolve().parents[3]
FAST: dict[str, Any] = {"settle_delay": (0.02, 0.05), "failure_ratio": 0.0, "webhooks": False}

# --- helpers --------------------------------------------------------------------------------


def fields_for(market: str, trade_no: str, **extra: str) -> dict[str, str]:
    """A valid payout request for ``market`` (before signing), per seeds 000/001/002/004."""
    base = {
        "tradeNo": trade_no,
        "timestamp": str(int(time.time() * 1000)),
        "email": "someone@example.com",
        "notifyUrl": "http://127.0.0.1:9/notify",
    }
    per_market = {
        "ID": {
            "amount": "100000",
            "bankAccountNo": "5464438554636",
            "bankCode": "0002",
            "customerName": "jack",
            "mobile": "6281245907765",
        },
        "AR": {
            "amount": "100",
            "accountNo": "880123456789012345",
            "firstname": "Rizky",
            "lastname": "Pratama",
            "mobile": "0912345678",
        },
        "JP": {
            "amount": "100",
            "bankCode": "0004",
            "bankNumber": "3560123456789012",
            "userId": "jp_user_123456",
            "firstname": "タロウ",
            "lastname": "ヤマダ",
            "mobile": "09123456789",
        },
        "KH": {
            "amount": "50000",
            "bankCode": "0004",
            "bankNumber": "88990011",
            "accountId": "lanton_88990011",
            "channelCode": "EWALLET",
            "wayCode": "LANTON",
            "firstname": "Sophea",
            "lastname": "Chan",
            "mobile": "123456789",
        },
    }
    return {**base, **per_market[market], **extra}


def signed(fields: dict[str, Any], secret: str) -> dict[str, Any]:
    return {**fields, "sign": sign(fields, secret)}


class Api:
    """A pooled client of one sandbox, speaking the payout API like a merchant would."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.config = sandbox.config
        self.session = requests.Session()
        self.session.trust_env = False

    def post(
        self, path: str, body: Any, merchant: str | None = None, timeout: float = 5.0
    ) -> requests.Response:
        headers = {"merchantNo": self.config.merchant_no if merchant is None else merchant}
        return self.session.post(
            self.sandbox.url + path, json=body, headers=headers, timeout=timeout
        )

    def submit(
        self, market: str, trade_no: str, prefix: str = "", timeout: float = 5.0, **extra: str
    ) -> requests.Response:
        body = signed(fields_for(market, trade_no, **extra), self.config.app_secret)
        return self.post(f"{prefix}/v1/vexora/disbursements", body, timeout=timeout)

    def query(self, trade_no: str) -> dict[str, Any]:
        body = signed({"tradeNo": trade_no, "timestamp": "1732985021335"}, self.config.app_secret)
        response = self.post("/v1/vexora/queryPayOutResult", body)
        assert response.status_code == 200
        return response.json()

    def token(self) -> str:
        response = self.session.post(
            self.sandbox.url + "/api/v1.0/access-token/b2b",
            json={"grant_type": "client_credentials"},
            headers={"X-PARTNER-ID": self.config.api_key},
            auth=(self.config.client_id, self.config.client_secret),
            timeout=5,
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]["access_token"]

    def get(self, path: str, token: str | None, **params: Any) -> requests.Response:
        headers = {"X-PARTNER-ID": self.config.api_key, "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.get(self.sandbox.url + path, headers=headers, params=params, timeout=5)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []

    def make(**knobs: Any) -> Sandbox:
        sandbox = Sandbox(SandboxConfig(**{**FAST, **knobs})).start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def api(make_sandbox: Callable[..., Sandbox]) -> Api:
    return Api(make_sandbox(seed=1))


class Receiver:
    """A tiny webhook receiver (werkzeug, threaded) that answers ``reply``."""

    def __init__(self, reply: str = "OK") -> None:
        self.reply = reply
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}/notify"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.calls.append((dict(request.headers), json.loads(request.get_data())))
        return Response(self.reply, content_type="text/plain")(environ, start_response)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [body for _, body in self.calls]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


# --- the provider's vocabulary, from the documents ------------------------------------------

# PROVIDERS.md's vector (computed from the documented rule with secret TEST_SECRET).
VECTOR_TEXT = (
    "amount=100000bankAccountNo=5464438554636bankCode=0002customerName=jack"
    "email=user@gmail.commobile=6281245907765notifyUrl=https://google.com"
    "timestamp=1732985021335tradeNo=39fa354542824ee789faf526f27c024f"
)
VECTOR_SIGN = "59083b685db195fb3e07cadd11d4b50f"
VECTOR_BODY: dict[str, Any] = {
    "tradeNo": "39fa354542824ee789faf526f27c024f",
    "timestamp": "1732985021335",
    "notifyUrl": "https://google.com",
    "mobile": "6281245907765",
    "email": "user@gmail.com",
    "customerName": "jack",
    "bankCode": "0002",
    "bankAccountNo": "5464438554636",
    "amount": "100000",
}


def test_the_sandbox_signs_the_providers_test_vector() -> None:
    assert sign_text(VECTOR_BODY) == VECTOR_TEXT
    assert sign(VECTOR_BODY, "TEST_SECRET") == VECTOR_SIGN
    # sign and empty values are left out; numbers are signed as the provider prints them
    # (seed 000's example sends amount and timestamp as JSON numbers).
    extras = {"sign": "x", "remark": "", "accountId": None}
    numbers = {"amount": 100000, "timestamp": 1732985021335}
    assert sign({**VECTOR_BODY, **extras, **numbers}, "TEST_SECRET") == VECTOR_SIGN
    assert verify({**VECTOR_BODY, "sign": VECTOR_SIGN}, "TEST_SECRET")
    assert verify({**VECTOR_BODY, "sign": VECTOR_SIGN.upper()}, "TEST_SECRET")
    assert not verify({**VECTOR_BODY, "sign": VECTOR_SIGN}, "OTHER_SECRET")
    assert not verify({**VECTOR_BODY, "amount": "100001", "sign": VECTOR_SIGN}, "TEST_SECRET")
    assert not verify(VECTOR_BODY, "TEST_SECRET")


def test_the_documented_codes_and_statuses() -> None:
    assert ACCEPTED == "0000"  # top-level code: the request was accepted
    # data.status (PROVIDERS.md's table)
    assert (STATUS_SUCCEEDED, STATUS_PROCESSING, STATUS_FAILED) == ("0000", "0015", "00029")


SANDBOX_DIR = REPO / "worker" / "sandbox"
CLIENT_VOCABULARY = ("worker.provider.vexora", "worker.provider.answers", "worker.core.signing")


def _sandbox_imports() -> dict[str, set[str]]:
    """Every module of worker/sandbox/ -> the modules it imports (TYPE_CHECKING too)."""
    modules = {path.stem: path for path in SANDBOX_DIR.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                # "from worker.sandbox import chance" imports the submodule chance
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[f"worker.sandbox.{name}"] = imported
    return graph


def test_the_sandbox_imports_no_client_vocabulary_and_no_cycle() -> None:
    graph = _sandbox_imports()
    for module, imported in graph.items():
        assert not imported & set(CLIENT_VOCABULARY), module
    inside = {
        module: {name for name in imported if name in graph and name != module}
        for module, imported in graph.items()
    }
    graphlib.TopologicalSorter(inside).prepare()  # CycleError names the cycle


# --- payout API: happy path -------------------------------------------------------------


def test_submit_accepts_then_settles_and_query_follows(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    # Settling after a second: the first query, right after the answer, must find the
    # payout still processing even on a loaded machine.
    api = Api(make_sandbox(seed=1, settle_delay=(1.0, 1.0)))
    answer = api.submit("ID", "happy1", remark="r-1").json()
    assert answer["code"] == ACCEPTED and answer["msg"] == "success" and answer["success"] is True
    data = answer["data"]
    assert data["tradeNo"] == "happy1" and data["status"] == STATUS_PROCESSING
    assert data["desc"] == "Processing" and data["remark"] == "r-1"
    assert len(data["platFormTradeNo"]) == 16 and data["platFormTradeNo"].isalnum()
    assert isinstance(answer["timestamp"], int)

    first = api.query("happy1")["data"]
    assert first["status"] == STATUS_PROCESSING
    assert first["platFormTradeNo"] == data["platFormTradeNo"] and first["amount"] == "100000"

    wait_for(lambda: api.sandbox.stats()["pending"] == 0)
    settled = api.query("happy1")["data"]
    assert settled["status"] == STATUS_SUCCEEDED  # failure_ratio 0
    assert settled["successTime"].isdigit() and settled["remark"] == "r-1"
    record = api.sandbox.payouts()["happy1"]
    assert record["market"] == "ID" and record["status"] == STATUS_SUCCEEDED
    assert "sign" not in record["fields"] and record["fields"]["bankCode"] == "0002"
    assert record["accepted_count"] == 1 and record["post_count"] == 1
    assert record["settled_at"] >= record["received_at"]


def _outcomes(sandbox: Sandbox, trade_nos: list[str]) -> dict[str, str]:
    client = Api(sandbox)
    for trade_no in trade_nos:
        assert client.submit("AR", trade_no).json()["code"] == ACCEPTED
    wait_for(lambda: sandbox.stats()["pending"] == 0)
    return {t: client.query(t)["data"]["status"] for t in trade_nos}


def test_outcomes_follow_the_seeded_failure_ratio(make_sandbox: Callable[..., Sandbox]) -> None:
    trade_nos = [f"seeded{i}" for i in range(30)]
    first = _outcomes(make_sandbox(seed=42, failure_ratio=0.5), trade_nos)
    again = _outcomes(make_sandbox(seed=42, failure_ratio=0.5), list(reversed(trade_nos)))
    assert first == again  # same seed, same fate per tradeNo, whatever the order
    assert set(first.values()) == {STATUS_SUCCEEDED, STATUS_FAILED}
    assert 5 <= list(first.values()).count(STATUS_FAILED) <= 25

    all_fail = make_sandbox(seed=42, failure_ratio=1.0)
    assert set(_outcomes(all_fail, trade_nos[:5]).values()) == {STATUS_FAILED}
    failed = Api(all_fail).query(trade_nos[0])["data"]
    assert failed["message"] == "REJECTED_TRANSACTION" and "successTime" not in failed
    stats = all_fail.stats()
    assert stats["failed"] == 5 and stats["succeeded"] == 0 and stats["payouts"] == 5


def test_markets_by_prefix_and_by_fields(api: Api) -> None:
    jp = api.submit("JP", "jp1", prefix="/jp").json()
    assert jp["code"] == ACCEPTED and jp["data"]["message"] == "Processing"
    assert "desc" not in jp["data"]
    for market, trade_no in (("AR", "ar1"), ("KH", "kh1"), ("JP", "jp2"), ("ID", "id1")):
        assert api.submit(market, trade_no).json()["code"] == ACCEPTED
    records = api.sandbox.payouts()
    assert {t: r["market"] for t, r in records.items()} == {
        "jp1": "JP",
        "ar1": "AR",
        "kh1": "KH",
        "jp2": "JP",
        "id1": "ID",
    }
    jp_query = api.query("jp1")["data"]
    assert jp_query["orderAmount"] == "100" and jp_query["payAmount"] == "100"
    assert "amount" not in jp_query
    assert api.query("kh1")["data"]["amount"] == "50000"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"drop": "bankCode"}, "bankCode"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"drop": "accountId"}, "accountId"),  # KH EWALLET + LANTON requires it
        ({"tradeNo": "x" * 33}, "tradeNo"),
    ],
)
def test_invalid_requests_get_8000_and_are_not_recorded(
    api: Api, change: dict[str, str], fragment: str
) -> None:
    fields = fields_for("KH", "bad1")
    if "drop" in change:
        fields.pop(change["drop"])
    else:
        fields.update(change)
    answer = api.post("/v1/vexora/disbursements", signed(fields, api.config.app_secret)).json()
    assert answer["code"] == CODE_REQUEST_FAILED and answer["success"] is False
    assert answer["data"] is None and fragment in answer["msg"]
    assert api.sandbox.payouts() == {}


def test_values_must_be_strings_and_market_must_be_known(api: Api) -> None:
    fields: dict[str, Any] = {**fields_for("ID", "num1"), "amount": 100000}
    answer = api.post("/v1/vexora/disbursements", signed(fields, api.config.app_secret)).json()
    assert answer["code"] == CODE_REQUEST_FAILED and "amount" in answer["msg"]

    wrong_prefix = api.submit("JP", "jp-as-id", prefix="/id").json()  # ID fields missing
    assert wrong_prefix["code"] == CODE_REQUEST_FAILED and "bankAccountNo" in wrong_prefix["msg"]

    anonymous = {k: v for k, v in fields_for("JP", "anon").items() if k != "userId"}
    answer = api.post("/v1/vexora/disbursements", signed(anonymous, api.config.app_secret)).json()
    assert answer["code"] == CODE_REQUEST_FAILED

    not_json = api.session.post(
        api.sandbox.url + "/v1/vexora/disbursements",
        data=b"not json",
        headers={"merchantNo": api.config.merchant_no},
    ).json()
    assert not_json["code"] == CODE_REQUEST_FAILED
    assert api.sandbox.payouts() == {}


# --- payout API: refusals ---------------------------------------------------------------


def test_bad_sign_is_4001_and_nothing_is_recorded(api: Api) -> None:
    body = signed(fields_for("ID", "badsign"), "not-the-secret")
    answer = api.post("/v1/vexora/disbursements", body).json()
    assert answer["code"] == CODE_BAD_SIGN and answer["success"] is False
    tampered = {**signed(fields_for("ID", "tampered"), api.config.app_secret), "amount": "999999"}
    assert api.post("/v1/vexora/disbursements", tampered).json()["code"] == CODE_BAD_SIGN
    assert api.sandbox.payouts() == {}
    stats = api.sandbox.stats()
    assert stats["bad_sign"] == 2 and stats["payouts"] == 0 and stats["payout_requests"] == 2


def test_wrong_merchant_is_4002(api: Api) -> None:
    body = signed(fields_for("ID", "merchant1"), api.config.app_secret)
    assert api.post("/v1/vexora/disbursements", body, merchant="M-OTHER").json()["code"] == (
        CODE_UNKNOWN_MERCHANT
    )
    query = signed({"tradeNo": "merchant1", "timestamp": "1"}, api.config.app_secret)
    answer = api.post("/v1/vexora/queryPayOutResult", query, merchant="")
    assert answer.json()["code"] == CODE_UNKNOWN_MERCHANT
    assert api.sandbox.payouts() == {}


def test_repeated_trade_no_is_4005_and_paid_once(api: Api) -> None:
    assert api.submit("ID", "twice").json()["code"] == ACCEPTED
    for _ in range(2):
        again = api.submit("ID", "twice", amount="200000").json()
        assert again["code"] == CODE_DUPLICATE_TRADE_NO and again["data"] is None
    record = api.sandbox.payouts()["twice"]
    assert record["accepted_count"] == 1 and record["post_count"] == 3
    assert record["amount"] == "100000"  # the first one stands
    stats = api.sandbox.stats()
    assert stats["repeated_trade_no_posts"] == 2 and stats["duplicate_payments"] == 0
    assert stats["payouts"] == 1


def test_concurrent_repeats_record_one_payout(api: Api) -> None:
    answers: list[str] = []

    def post() -> None:
        answers.append(Api(api.sandbox).submit("ID", "race").json()["code"])

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [ACCEPTED] + [CODE_DUPLICATE_TRADE_NO] * 7
    assert api.sandbox.payouts()["race"]["post_count"] == 8


def test_query_unknown_is_4004_and_balance_answers_strings(api: Api) -> None:
    assert api.query("nobody")["code"] == CODE_ORDER_NOT_FOUND
    balance_body = signed({"timestamp": "1732985021335"}, api.config.app_secret)
    before = api.post("/v1/vexora/queryBalance", balance_body).json()["data"]
    assert set(before) == {"availableAmount", "freezeAmount", "unsettledAmount"}
    assert all(isinstance(v, str) for v in before.values())
    api.submit("ID", "spend1")
    assert api.post("/v1/vexora/queryBalance", balance_body).json()["data"]["freezeAmount"] == (
        "100000.00"
    )
    wait_for(lambda: api.sandbox.stats()["pending"] == 0)
    after = api.post("/v1/vexora/queryBalance", balance_body).json()["data"]
    assert float(before["availableAmount"]) - float(after["availableAmount"]) == 100000
    bad = api.post("/v1/vexora/queryBalance", {"timestamp": "1", "sign": "x"}).json()
    assert bad["code"] == CODE_BAD_SIGN


# --- payout API: faults -------------------------------------------------------------------


def test_error_ratio_answers_500_before_or_after_recording(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(seed=7, error_ratio=1.0)
    client = Api(sandbox)
    trade_nos = [f"err{i}" for i in range(24)]
    for trade_no in trade_nos:
        response = client.submit("ID", trade_no)
        assert response.status_code == 500
        assert response.json()["code"] == "5000"
    recorded = sandbox.payouts()
    stats = sandbox.stats()
    assert 0 < len(recorded) < len(trade_nos)  # about half after recording
    assert stats["errors_after_record"] == len(recorded)
    assert stats["errors_before_record"] == len(trade_nos) - len(recorded)
    wait_for(lambda: sandbox.stats()["pending"] == 0)  # recorded ones settle anyway

    sandbox.configure(error_ratio=0.0)
    for trade_no in trade_nos:  # the retry with the same tradeNo
        code = client.submit("ID", trade_no).json()["code"]
        assert code == (CODE_DUPLICATE_TRADE_NO if trade_no in recorded else ACCEPTED)
    assert all(r["accepted_count"] == 1 for r in sandbox.payouts().values())
    assert sandbox.stats()["payouts"] == len(trade_nos)


@pytest.mark.parametrize(("share", "recorded"), [(0.0, 0), (1.0, 12)])
def test_error_after_record_share_says_which_500s_come_after_recording(
    make_sandbox: Callable[..., Sandbox], share: float, recorded: int
) -> None:
    sandbox = make_sandbox(seed=7, error_ratio=1.0, error_after_record_share=share)
    client = Api(sandbox)
    for i in range(12):
        assert client.submit("ID", f"share{i}").status_code == 500
    assert len(sandbox.payouts()) == recorded
    assert sandbox.stats()["errors_before_record"] == 12 - recorded


def test_query_of_an_unknown_trade_no_can_answer_an_undocumented_code(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(not_found_code="9001")
    client = Api(sandbox)
    answer = client.query("never-sent")
    assert (answer["code"], answer["success"], answer["data"]) == ("9001", False, None)
    assert sandbox.stats()["query_not_found"] == 1
    assert client.submit("ID", "sent1").json()["code"] == ACCEPTED
    assert client.query("sent1")["code"] == ACCEPTED


def test_a_repeated_trade_no_can_be_answered_8000_and_is_still_paid_once(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(repeat_code=CODE_REQUEST_FAILED)
    client = Api(sandbox)
    assert client.submit("ID", "paid1").json()["code"] == ACCEPTED
    wait_for(lambda: sandbox.stats()["succeeded"] == 1)
    again = client.submit("ID", "paid1").json()
    assert (again["code"], again["data"]) == (CODE_REQUEST_FAILED, None)
    record = sandbox.payouts()["paid1"]
    assert (record["accepted_count"], record["post_count"]) == (1, 2)
    assert record["status"] == STATUS_SUCCEEDED


def test_query_lag_hides_a_recorded_payout_from_the_query_for_a_while(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(query_lag=0.5, not_found_code="9001")
    client = Api(sandbox)
    assert client.submit("ID", "lag1").json()["code"] == ACCEPTED
    assert client.query("lag1")["code"] == "9001"
    assert "lag1" in sandbox.payouts()
    wait_for(lambda: client.query("lag1")["code"] == ACCEPTED)


@pytest.mark.parametrize(
    "knobs",
    [
        {"repeat_code": ACCEPTED},
        {"not_found_code": ""},
        {"query_lag": -1},
        {"error_after_record_share": 1.5},
    ],
)
def test_fault_knobs_are_validated(knobs: dict[str, Any]) -> None:
    with pytest.raises(SandboxConfigError):
        SandboxConfig(**knobs)


def test_hang_records_the_payout_but_never_answers(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(hang_ratio=1.0, hang_seconds=0.4)
    client = Api(sandbox)
    with pytest.raises(requests.ReadTimeout):
        client.submit("ID", "hang1", timeout=0.15)
    assert sandbox.payouts()["hang1"]["accepted_count"] == 1
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):  # closed without an answer
        client.submit("ID", "hang2", timeout=3)
    # Closed after hang_seconds: a ConnectionError, where the client's timeout (3 s)
    # would have raised ReadTimeout.
    assert time.monotonic() - started > 0.3
    assert set(sandbox.payouts()) == {"hang1", "hang2"}
    assert sandbox.stats()["hangs"] == 2
    sandbox.configure(hang_ratio=0)
    assert client.query("hang2")["data"]["tradeNo"] == "hang2"


def test_rate_ceiling_answers_429(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(rate_ceiling=5)
    client = Api(sandbox)
    codes = [client.submit("ID", f"rl{i}").status_code for i in range(15)]
    assert codes[:5] == [200] * 5 and 429 in codes
    limited = client.submit("ID", "rl-extra")
    if limited.status_code == 429:
        assert limited.headers["Retry-After"] == "1"
    stats = sandbox.stats()
    assert stats["rate_limited"] == codes.count(429) + (limited.status_code == 429)
    assert stats["payouts"] == codes.count(200) + (limited.status_code == 200)
    assert stats["payout_requests"] == 16


def test_latency_delays_answers(make_sandbox: Callable[..., Sandbox]) -> None:
    client = Api(make_sandbox(latency=0.2))
    started = time.monotonic()
    client.query("nobody")
    assert time.monotonic() - started >= 0.2


# --- statistics -------------------------------------------------------------------------------


def test_busiest_second_from_known_arrival_times() -> None:
    state = State()
    for t in (0.0, 0.1, 0.2, 0.3, 1.05, 1.15, 1.2, 1.25, 1.28, 3.0):
        state.payout_post_arrived(t, None)
    # (0.25, 1.25]: 0.3, 1.05, 1.15, 1.2, 1.25 -> 5; (0.28, 1.28] -> 0.3 .. 1.28 -> 6
    assert state.stats()["max_payout_requests_per_second"] == 6
    limited = State()
    allowed = [limited.payout_post_arrived(t / 10, 3) for t in range(12)]
    # 3 admitted per sliding second; 429s do not use the allowance
    assert allowed == [True] * 3 + [False] * 7 + [True] * 2
    assert limited.stats()["rate_limited"] == 7


def test_busiest_second_over_http(api: Api) -> None:
    for i in range(12):
        api.submit("ID", f"burst{i}")
    time.sleep(1.1)
    for i in range(4):
        api.submit("ID", f"later{i}")
    stats = api.sandbox.stats()
    assert stats["max_payout_requests_per_second"] == 12
    assert stats["payout_requests"] == 16


def test_pooled_session_reuses_one_connection(api: Api) -> None:
    api.query("warm")
    before = api.sandbox.stats()["http_connections"]
    for i in range(20):
        assert api.submit("ID", f"ka{i}").json()["code"] == ACCEPTED
    assert api.sandbox.stats()["http_connections"] == before


# --- details API ----------------------------------------------------------------------------


def test_token_requires_partner_and_client_credentials(api: Api) -> None:
    url = api.sandbox.url + "/api/v1.0/access-token/b2b"
    grant = {"grant_type": "client_credentials"}
    cfg = api.config
    for headers, auth in (
        ({"X-PARTNER-ID": "nope"}, (cfg.client_id, cfg.client_secret)),
        ({"X-PARTNER-ID": cfg.api_key}, (cfg.client_id, "wrong")),
        ({"X-PARTNER-ID": cfg.api_key}, None),
    ):
        answer = api.session.post(url, json=grant, headers=headers, auth=auth)
        assert answer.status_code == 401
        assert answer.json() == {
            "status": 401,
            "success": False,
            "error": {"code": 401, "message": "Unauthorized partner, please sign in"},
        }
    good = api.session.post(
        url,
        json=grant,
        headers={"X-PARTNER-ID": cfg.api_key},
        auth=(cfg.client_id, cfg.client_secret),
    ).json()
    assert good["status"] == 200 and good["success"] is True
    assert good["data"]["token_type"] == "Bearer" and good["data"]["expires_in"] == "3600"
    assert api.sandbox.stats()["tokens_issued"] == 1


def test_details_needs_a_valid_token_and_follows_settlement(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(seed=5, failure_ratio=1.0, token_lifetime=0.5, settle_delay=(60, 60))
    client = Api(sandbox)
    platform = client.submit("ID", "det1", remark="note").json()["data"]["platFormTradeNo"]
    account = sandbox.config.account_id
    path = f"/api/v1.0/disbursements/{account}/{platform}"

    assert client.get(path, None).status_code == 401
    assert client.get(path, "made-up").status_code == 401
    token = client.token()
    pending = client.get(path, token)
    assert pending.status_code == 200
    body = pending.json()
    assert body["status"] == 200 and body["success"] is True
    inner = body["data"]
    assert inner["status"] == 200 and inner["balance_after"]["currency"] == "IDR"
    row = inner["data"]
    assert row["transaction_id"] == platform and row["status"] == "pending"
    assert row["amount"] == {"value": "100000.00", "currency": "IDR"}
    assert row["total_amount"] == {"value": "102000.00", "currency": "IDR"}
    assert row["fees"][0]["value"] == "2000.00" and row["notes"] == "note"
    assert row["post_timestamp"].isdigit() and row["processed_timestamp"] is None
    assert row["bank"]["account_number"] == "5464438554636"

    time.sleep(0.55)  # the token expires
    assert sandbox.settle_now() == 1
    expired = client.get(path, token)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == 401
    token = client.token()
    singular = client.get(f"/api/v1.0/disbursement/{account}/{platform}", token).json()
    settled = singular["data"]["data"]
    assert settled["status"] == "failed" and settled["processed_timestamp"].isdigit()

    sandbox.configure(nested_details=False)
    flat = client.get(path, token).json()
    assert flat["data"]["transaction_id"] == platform and flat["data"]["status"] == "failed"

    missing = client.get(f"/api/v1.0/disbursements/{account}/nope", token)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    assert client.get(f"/api/v1.0/disbursements/other/{platform}", token).status_code == 404
    stats = sandbox.stats()
    assert stats["tokens_issued"] == 2 and stats["details_lookups"] == 8
    assert stats["details_unauthorized"] == 3


@pytest.mark.parametrize("style", ["pagination", "meta", "empty", "none"])
def test_list_pages_newest_first_in_each_style(
    make_sandbox: Callable[..., Sandbox], style: str
) -> None:
    sandbox = make_sandbox(page_size=3, pagination_style=style)
    client = Api(sandbox)
    platforms = [
        client.submit("ID", f"list{i}").json()["data"]["platFormTradeNo"] for i in range(7)
    ]
    token = client.token()
    path = f"/api/v1.0/disbursement/{sandbox.config.account_id}"
    seen: list[str] = []
    for page in (1, 2, 3):
        body = client.get(path, token, page=page).json()
        assert body["status"] == 200 and body["success"] is True
        seen += [row["transaction_id"] for row in body["data"]]
        if style == "pagination":
            assert body["pagination"] == {
                "current_page": page,
                "total_pages": 3,
                "per_page": 3,
                "total": 7,
            }
        elif style == "meta":
            assert body["meta"] == {"currentPage": page, "totalPages": 3, "perPage": 3, "total": 7}
        elif style == "empty":
            assert body["pagination"] == {}
        else:
            assert set(body) == {"status", "success", "data"}
    assert seen == list(reversed(platforms))
    assert client.get(path, token, page=4).json()["data"] == []
    assert client.get(path, token, page="x").status_code == 422
    assert client.get(path, None).status_code == 401
    assert sandbox.stats()["list_requests"] == 6


def test_list_arrivals_push_rows_down_and_a_revoked_token_is_a_401_once(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(page_size=3, list_arrivals=2, revoke_tokens_at_list_request=2)
    client = Api(sandbox)
    ours = [client.submit("ID", f"arr{i}").json()["data"]["platFormTradeNo"] for i in range(3)]
    token = client.token()
    path = f"/api/v1.0/disbursement/{sandbox.config.account_id}"
    first = client.get(path, token, page=1).json()
    # Two payouts of another system arrived first: at the top, ours shifted down.
    assert [row["transaction_id"] for row in first["data"]][2] == ours[2]
    assert first["pagination"]["total"] == 5
    refused = client.get(path, token, page=2)  # the second list request: tokens revoked
    assert refused.status_code == 401
    again = client.get(path, client.token(), page=2).json()  # a fresh token: served
    assert again["pagination"]["total"] == 9  # two more arrived before each request
    stats = sandbox.stats()
    assert stats["list_arrivals"] == 6 and stats["details_unauthorized"] == 1
    assert stats["payouts"] == 9 and stats["tokens_issued"] == 2


# --- webhooks ----------------------------------------------------------------------------------


def test_webhooks_are_signed_strings_and_verify(
    make_sandbox: Callable[..., Sandbox], receiver: Receiver
) -> None:
    sandbox = make_sandbox(webhooks=True, failure_ratio=0.5, seed=3)
    client = Api(sandbox)
    trade_nos = [f"wh{i}" for i in range(6)]
    for trade_no in trade_nos:
        client.submit("ID", trade_no, notifyUrl=receiver.url, remark=f"rm-{trade_no}")
    wait_for(lambda: len(receiver.calls) == 6)
    records = sandbox.payouts()
    for headers, body in receiver.calls:
        assert headers["Content-Type"] == "application/json"
        assert verify(body, sandbox.config.app_secret)
        assert all(isinstance(value, str) for value in body.values())
        assert set(body) == {
            "platFormTradeNo",
            "tradeNo",
            "amount",
            "status",
            "message",
            "remark",
            "timestamp",
            "sign",
        }
        record = records[body["tradeNo"]]
        assert body["status"] == record["status"] != STATUS_PROCESSING
        assert body["platFormTradeNo"] == record["platFormTradeNo"]
        assert body["remark"] == f"rm-{body['tradeNo']}"
    wait_for(lambda: sandbox.stats()["webhooks_delivered"] == 6)
    stats = sandbox.stats()
    assert stats["webhooks_sent"] == 6 and stats["webhooks_failed"] == 0
    assert all(r["webhook_deliveries"] == 1 for r in sandbox.payouts().values())


def test_a_paid_payout_reversed_fails_everywhere_and_says_so_by_webhook(
    make_sandbox: Callable[..., Sandbox], receiver: Receiver
) -> None:
    sandbox = make_sandbox(webhooks=True, failure_ratio=0.0, settle_delay=(60, 60))
    client = Api(sandbox)
    platform = client.submit("ID", "rev1", notifyUrl=receiver.url).json()["data"]
    client.submit("ID", "rev2", notifyUrl=receiver.url)
    reverse = sandbox.url + "/_sandbox/reverse"
    # Only a payout that succeeded can bounce back.
    refused = client.session.post(reverse, json={"tradeNo": "rev1"})
    assert refused.status_code == 409 and "rev1" in refused.json()["error"]["message"]
    assert client.session.post(reverse, json={"tradeNo": 7}).status_code == 400
    assert sandbox.settle_now() == 2
    wait_for(lambda: len(receiver.calls) == 2)

    answer = client.session.post(reverse, json={"tradeNo": "rev1"})
    assert answer.status_code == 200 and answer.json() == {"reversed": "rev1"}
    assert client.session.post(reverse, json={"tradeNo": "rev1"}).status_code == 409
    assert sandbox.reverse("rev2", webhook=False)
    wait_for(lambda: len(receiver.calls) == 3)
    body = receiver.bodies()[-1]
    assert (body["tradeNo"], body["status"]) == ("rev1", STATUS_FAILED)
    assert verify(body, sandbox.config.app_secret)
    assert client.query("rev1")["data"]["status"] == STATUS_FAILED
    token = client.token()
    path = f"/api/v1.0/disbursement/{sandbox.config.account_id}/{platform['platFormTradeNo']}"
    assert client.get(path, token).json()["data"]["data"]["status"] == "failed"
    records = sandbox.payouts()
    assert records["rev1"]["reversed_at"] is not None and records["rev2"]["status"] == (
        STATUS_FAILED
    )
    stats = sandbox.stats()
    assert (stats["reversals"], stats["succeeded"], stats["failed"]) == (2, 0, 2)


def test_webhook_not_ok_is_retried_on_the_scaled_schedule(
    make_sandbox: Callable[..., Sandbox], receiver: Receiver
) -> None:
    receiver.reply = "NOPE"
    sandbox = make_sandbox(webhooks=True, webhook_time_scale=0.00002)  # 24 h -> ~0.9 s
    Api(sandbox).submit("ID", "retry1", notifyUrl=receiver.url)
    wait_for(lambda: sandbox.stats()["webhooks_failed"] == 1, timeout=8)
    assert len(receiver.calls) == 9  # the first try and 8 retries (PROVIDERS.md)
    stats = sandbox.stats()
    assert stats["webhooks_sent"] == 9 and stats["webhooks_retried"] == 8
    assert stats["webhooks_delivered"] == 0
    assert sandbox.payouts()["retry1"]["webhook_attempts"] == 9

    receiver.reply = "ok"  # case-sensitive: still not accepted
    sandbox.configure(webhook_retry_schedule=[0.01])
    Api(sandbox).submit("ID", "retry2", notifyUrl=receiver.url)
    wait_for(lambda: sandbox.stats()["webhooks_failed"] == 2)
    receiver.reply = "OK"
    Api(sandbox).submit("ID", "retry3", notifyUrl=receiver.url)
    wait_for(lambda: sandbox.stats()["webhooks_delivered"] == 1)


def test_dropped_duplicated_and_disabled_webhooks(
    make_sandbox: Callable[..., Sandbox], receiver: Receiver
) -> None:
    sandbox = make_sandbox(webhooks=True, drop_webhook_ratio=1.0)
    client = Api(sandbox)
    for i in range(3):
        client.submit("ID", f"drop{i}", notifyUrl=receiver.url)
    wait_for(lambda: sandbox.stats()["webhooks_dropped"] == 3)

    sandbox.configure(drop_webhook_ratio=0, duplicate_webhook_ratio=1.0, webhook_time_scale=0.01)
    client.submit("ID", "dup1", notifyUrl=receiver.url)
    wait_for(lambda: len(receiver.calls) == 2)
    assert [b["tradeNo"] for b in receiver.bodies()] == ["dup1", "dup1"]
    wait_for(lambda: sandbox.payouts()["dup1"]["webhook_deliveries"] == 2)

    sandbox.configure(webhooks=False, duplicate_webhook_ratio=0)
    client.submit("ID", "off1", notifyUrl=receiver.url)
    wait_for(lambda: sandbox.stats()["pending"] == 0)
    time.sleep(0.05)
    assert len(receiver.calls) == 2
    assert sandbox.stats()["webhooks_suppressed"] == 1


def test_remote_webhooks_are_skipped_and_target_overrides(
    make_sandbox: Callable[..., Sandbox], receiver: Receiver
) -> None:
    sandbox = make_sandbox(webhooks=True)
    client = Api(sandbox)
    client.submit("ID", "remote1", notifyUrl="https://example.com/notify")
    client.submit("ID", "remote2", notifyUrl="http://10.1.2.3/notify")
    wait_for(lambda: sandbox.stats()["webhooks_skipped_remote"] == 2)
    assert sandbox.stats()["webhooks_sent"] == 0

    sandbox.configure(webhook_target=receiver.url)  # the demo: HTTPS notifyUrl, local receiver
    client.submit("ID", "target1", notifyUrl="https://merchant.example.com/notify")
    wait_for(lambda: len(receiver.calls) == 1)
    assert receiver.bodies()[0]["tradeNo"] == "target1"


def test_every_failed_delivery_is_a_warning_naming_the_path_only(
    make_sandbox: Callable[..., Sandbox], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.reply = "NOPE"
    sandbox = make_sandbox(webhooks=True, webhook_retry_schedule=[0.01])
    caplog.set_level(logging.WARNING, logger="worker.sandbox.webhooks")
    Api(sandbox).submit("ID", "warn1", notifyUrl=receiver.url + "?token=s3cret")
    Api(sandbox).submit("ID", "warn2", notifyUrl="https://merchant.example.com/hook?k=s3cret")
    wait_for(lambda: sandbox.stats()["webhooks_failed"] == 1)
    wait_for(lambda: sandbox.stats()["webhooks_skipped_remote"] == 1)

    failed = [r.getMessage() for r in caplog.records if "warn1" in r.getMessage()]
    assert len(failed) == 2  # the first try and its one retry
    assert "to /notify failed (attempt 1: HTTP 200 without the body OK); next try" in failed[0]
    assert "(attempt 2: HTTP 200 without the body OK); given up" in failed[1]
    skipped = [r.getMessage() for r in caplog.records if "warn2" in r.getMessage()]
    assert len(skipped) == 1 and "/hook is not on a loopback address" in skipped[0]
    for message in failed + skipped:
        assert "s3cret" not in message and "127.0.0.1" not in message
        assert "merchant.example.com" not in message


def test_an_unreachable_receiver_is_a_warning_with_the_error(
    make_sandbox: Callable[..., Sandbox], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = make_sandbox(webhooks=True, webhook_retry_schedule=[])
    caplog.set_level(logging.WARNING, logger="worker.sandbox.webhooks")
    Api(sandbox).submit("ID", "down1", notifyUrl=f"http://127.0.0.1:{free_port()}/notify")
    wait_for(lambda: sandbox.stats()["webhooks_failed"] == 1)
    (message,) = [r.getMessage() for r in caplog.records if "down1" in r.getMessage()]
    assert "to /notify failed (attempt 1: ConnectionError); given up" in message


def test_loopback_check() -> None:
    for url in (
        "http://127.0.0.1:1/x",
        "http://localhost/x",
        "https://[::1]:8/x",
        "http://127.9.9.9",
    ):
        assert check_url(url, allow_remote=False) == "ok", url
    for url in ("https://example.com/x", "http://10.0.0.1/x", "http://localhost.evil.com/x"):
        assert check_url(url, allow_remote=False) == "remote", url
    assert check_url("https://example.com/x", allow_remote=True) == "ok"
    for url in ("ftp://127.0.0.1/x", "not a url", ""):
        assert check_url(url, allow_remote=False) == "invalid", url


# --- control -------------------------------------------------------------------------------


def test_config_and_reset_endpoints(api: Api) -> None:
    url = api.sandbox.url
    shown = api.session.get(url + "/_sandbox/config").json()
    assert shown["app_secret"] == "***" and shown["merchant_no"] == api.config.merchant_no
    changed = api.session.post(
        url + "/_sandbox/config", json={"failure_ratio": 1, "settle_delay": [0.01, 0.02]}
    )
    assert changed.status_code == 200 and changed.json()["settle_delay"] == [0.01, 0.02]
    assert api.config.failure_ratio == 1.0
    for bad in ({"no_such_knob": 1}, {"failure_ratio": 2}, {"pagination_style": "x"}, [1]):
        assert api.session.post(url + "/_sandbox/config", json=bad).status_code == 400
    assert api.config.failure_ratio == 1.0  # all or nothing

    api.submit("ID", "reset1")
    assert api.session.get(url + "/_sandbox/payouts").json()["reset1"]["post_count"] == 1
    assert api.session.post(url + "/_sandbox/reset").json() == {"ok": True}
    assert api.session.get(url + "/_sandbox/payouts").json() == {}
    stats = api.session.get(url + "/_sandbox/stats").json()
    assert stats["payouts"] == 0 and stats["payout_requests"] == 0
    assert api.submit("ID", "reset1").json()["code"] == ACCEPTED  # forgotten


def test_settle_now_and_unknown_routes(api: Api) -> None:
    api.sandbox.configure(settle_delay=(60, 60))
    api.submit("ID", "now1")
    assert api.session.post(api.sandbox.url + "/_sandbox/settle").json() == {"settled": 1}
    assert api.query("now1")["data"]["status"] == STATUS_SUCCEEDED
    missing = api.session.get(api.sandbox.url + "/nowhere")
    assert missing.status_code == 404 and missing.json()["success"] is False
    assert api.session.get(api.sandbox.url + "/v1/vexora/disbursements").status_code == 405


def test_config_coercion() -> None:
    config = SandboxConfig(settle_delay=[1, 2], webhook_retry_schedule=[1])  # type: ignore[arg-type]
    assert config.settle_delay == (1.0, 2.0) and config.webhook_retry_schedule == (1.0,)
    config.update({"rate_ceiling": "20", "webhooks": "false", "seed": None})
    assert config.rate_ceiling == 20.0 and config.webhooks is False
    with pytest.raises(SandboxConfigError):
        SandboxConfig(settle_delay=(2.0, 1.0))
    with pytest.raises(SandboxConfigError):
        config.update({"error_ratio": 0.6, "hang_ratio": 0.6})


def test_app_works_without_a_server() -> None:
    sandbox = Sandbox(SandboxConfig(**FAST))
    try:
        client = Client(sandbox.app)
        cfg = sandbox.config
        body = signed(fields_for("AR", "inproc1"), cfg.app_secret)
        answer = client.post(
            "/ar/v1/vexora/disbursements", json=body, headers={"merchantNo": cfg.merchant_no}
        )
        assert answer.status_code == 200 and (answer.json or {}).get("code") == ACCEPTED
        wait_for(lambda: sandbox.stats()["succeeded"] == 1)
    finally:
        sandbox.stop()


def test_stop_stops_serving(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox()
    client = Api(sandbox)
    client.query("x")  # a pooled keep-alive connection exists
    sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        client.query("x")
    with Sandbox(SandboxConfig(**FAST)) as again:
        assert requests.get(again.url + "/_sandbox/health", timeout=5).json() == {"ok": True}


def test_cli_arguments_map_to_knobs() -> None:
    import argparse

    from worker.sandbox import config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--failure-ratio",
            "0.3",
            "--settle-delay",
            "1",
            "2",
            "--no-webhooks",
            "--rate-ceiling",
            "15",
            "--seed",
            "9",
            "--pagination-style",
            "meta",
            "--error-after-record-share",
            "0",
            "--not-found-code",
            "9001",
            "--repeat-code",
            "8000",
            "--query-lag",
            "40",
        ]
    )
    config = config_from_args(args)
    assert (config.error_after_record_share, config.query_lag) == (0.0, 40.0)
    assert (config.not_found_code, config.repeat_code) == ("9001", "8000")
    assert (config.failure_ratio, config.settle_delay, config.webhooks) == (0.3, (1.0, 2.0), False)
    assert (config.rate_ceiling, config.seed, config.pagination_style) == (15.0, 9, "meta")
    assert parser.parse_args([]).port == 8700


def test_python_dash_m_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.sandbox", "--port", "0", "--no-webhooks"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        url = line.rsplit(" ", 1)[-1].strip()
        assert requests.get(url + "/_sandbox/health", timeout=5).json() == {"ok": True}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- several merchant accounts -------------------------------------------------------------

AR_ACCOUNT = {"M-AR": {"app_secret": "secret-ar"}}


def as_merchant(api: Api, merchant: str, secret: str, path: str, fields: dict[str, Any]) -> Any:
    return api.post(path, signed(fields, secret), merchant=merchant).json()


def test_each_merchant_account_is_checked_against_its_own_secret(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    api = Api(make_sandbox(accounts=AR_ACCOUNT))
    default = (api.config.merchant_no, api.config.app_secret)
    pay = "/ar/v1/vexora/disbursements"
    assert as_merchant(api, "M-AR", "secret-ar", pay, fields_for("AR", "acct1"))["code"] == (
        ACCEPTED
    )
    assert as_merchant(api, *default, pay, fields_for("AR", "acct2"))["code"] == ACCEPTED
    crossed = [("M-AR", default[1]), (default[0], "secret-ar")]
    for merchant, secret in crossed:
        assert as_merchant(api, merchant, secret, pay, fields_for("AR", "x"))["code"] == (
            CODE_BAD_SIGN
        )
    payouts = api.sandbox.payouts()
    assert (payouts["acct1"]["merchant_no"], payouts["acct2"]["merchant_no"]) == (
        "M-AR", default[0],
    )  # fmt: skip


def test_a_merchant_sees_only_its_own_payouts(make_sandbox: Callable[..., Sandbox]) -> None:
    api = Api(make_sandbox(accounts=AR_ACCOUNT))
    as_merchant(api, "M-AR", "secret-ar", "/v1/vexora/disbursements", fields_for("AR", "own1"))
    query = {"tradeNo": "own1", "timestamp": "1"}
    path = "/v1/vexora/queryPayOutResult"
    assert as_merchant(api, "M-AR", "secret-ar", path, query)["data"]["tradeNo"] == "own1"
    theirs = as_merchant(api, api.config.merchant_no, api.config.app_secret, path, query)
    assert theirs["code"] == CODE_ORDER_NOT_FOUND


def test_webhooks_are_signed_with_the_paying_account_secret(
    make_sandbox: Callable[..., Sandbox], receiver: Receiver
) -> None:
    api = Api(make_sandbox(accounts=AR_ACCOUNT, webhooks=True))
    fields = fields_for("AR", "whar1", notifyUrl=receiver.url)
    as_merchant(api, "M-AR", "secret-ar", "/v1/vexora/disbursements", fields)
    wait_for(lambda: len(receiver.calls) == 1)
    (body,) = receiver.bodies()
    assert verify(body, "secret-ar") and not verify(body, api.config.app_secret)


def test_each_account_has_its_own_rate_window_and_ceiling() -> None:
    state = State()
    ceilings = {"M-ID": 2, "M-AR": 4}
    allowed = {
        m: [state.payout_post_arrived(t / 100, ceilings[m], m) for t in range(6)]
        for m in ("M-ID", "M-AR")
    }
    assert allowed == {"M-ID": [True] * 2 + [False] * 4, "M-AR": [True] * 4 + [False] * 2}
    stats = state.stats()
    assert stats["accounts"] == {
        "M-ID": {"payout_requests": 6, "max_payout_requests_per_second": 6},
        "M-AR": {"payout_requests": 6, "max_payout_requests_per_second": 6},
    }
    assert stats["max_payout_requests_per_second"] == 12  # both accounts together


def test_an_account_rate_ceiling_over_http(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(accounts={"M-AR": {"app_secret": "secret-ar", "rate_ceiling": 2}})
    api = Api(sandbox)
    pay = "/v1/vexora/disbursements"
    codes = [
        api.post(pay, signed(fields_for("AR", f"c{i}"), "secret-ar"), merchant="M-AR").status_code
        for i in range(5)
    ]
    assert codes[:2] == [200, 200] and 429 in codes
    assert api.submit("ID", "other-account").status_code == 200  # its own window


def test_the_sandbox_has_its_own_credentials_whatever_the_workers_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It never takes a deployment's credentials (no real secret to accept); the
    workers are handed its own (worker.dev.credentials)."""
    monkeypatch.setenv("VEXORA_APP_SECRET", "real-secret")
    monkeypatch.setenv("VEXORA_JP_MERCHANT_NO", "M-JP")
    monkeypatch.setenv("VEXORA_JP_APP_SECRET", "secret-jp")
    config = SandboxConfig()
    assert (config.merchant_no, config.app_secret) == ("M-SANDBOX", "sandbox-secret")
    assert config.secret_of("M-JP") is None and config.accounts == {}
    assert config.secret_of(config.merchant_no) == config.app_secret
    config.update({"accounts": {"M-JP": {"app_secret": "secret-jp"}}})
    assert config.secret_of("M-JP") == "secret-jp"
    assert config.as_dict()["accounts"] == {"M-JP": {"app_secret": "***"}}


@pytest.mark.parametrize(
    "bad",
    [
        ["M-AR"],
        {"M-AR": {}},
        {"M-AR": {"app_secret": "s", "balance": "1"}},
        {"M-AR": {"app_secret": "s", "rate_ceiling": 0}},
    ],
)
def test_malformed_accounts_are_refused(bad: Any) -> None:
    with pytest.raises(SandboxConfigError, match=r"accounts|rate_ceiling"):
        SandboxConfig(accounts=bad)
