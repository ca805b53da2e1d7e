"""VexoraClient against a real local HTTP server (werkzeug) and raw sockets that misbehave."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from tests.unit.fake_provider import FakeProvider, SpySession, serving
from worker.core.config import load_settings
from worker.core.exceptions import (
    AlreadySubmitted,
    ConfigurationRejected,
    NotFound,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    Refused,
    Rejected,
)
from worker.core.settings import Settings
from worker.core.signing import verify
from worker.core.states import State
from worker.dev.credentials import sandbox_settings
from worker.provider import answers, vexora
from worker.provider.answers import Balance, PayoutResult
from worker.provider.vexora import VexoraClient

SECRET = "TEST_SECRET"
MERCHANT = "M-123"
TRADE_NO = "39fa354542824ee789faf526f27c024f"
FIELDS = {
    "amount": "100000",
    "bankAccountNo": "5464438554636",
    "bankCode": "0002",
    "customerName": "jack",
    "email": "user@gmail.com",
    "mobile": "6281245907765",
    "notifyUrl": "https://google.com",
}


# --- a fake provider on a real port ---------------------------------------------------


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with serving() as fake:
        yield fake


@pytest.fixture
def client(provider: FakeProvider) -> Iterator[VexoraClient]:
    with VexoraClient(provider.url, MERCHANT, SECRET, timeouts=(1.0, 2.0)) as c:
        yield c


def answer(status: str = "0015", code: str = "0000", **data: Any) -> dict[str, Any]:
    body_data = {"tradeNo": TRADE_NO, "platFormTradeNo": "2tjba3vz6wm6hx3l", "status": status}
    body_data.update(data)
    return {
        "msg": "success",
        "code": code,
        "timestamp": 1728611805322,
        "success": True,
        "data": body_data,
    }


def refusal(code: str, msg: str = "nope") -> dict[str, Any]:
    return {"msg": msg, "code": code, "timestamp": 1728611805322, "success": False, "data": None}


# --- signing and the body sent ----------------------------------------------------------


def test_signed_body_matches_the_providers_vector() -> None:
    c = VexoraClient("http://x", MERCHANT, SECRET, timeouts=(1.0, 2.0))
    body = c.signed_body(FIELDS, TRADE_NO, timestamp_ms=1732985021335)
    assert body == {
        **FIELDS,
        "tradeNo": TRADE_NO,
        "timestamp": "1732985021335",
        "sign": "59083b685db195fb3e07cadd11d4b50f",
    }
    assert all(isinstance(v, str) for v in body.values())


def test_signed_body_drops_empty_values_and_refuses_non_strings_and_reserved_keys() -> None:
    c = VexoraClient("http://x", MERCHANT, SECRET, timeouts=(1.0, 2.0))
    body = c.signed_body({**FIELDS, "remark": ""}, TRADE_NO, timestamp_ms=1732985021335)
    assert "remark" not in body
    assert body["sign"] == "59083b685db195fb3e07cadd11d4b50f"
    with pytest.raises(TypeError, match="amount"):
        c.signed_body({**FIELDS, "amount": 100000}, TRADE_NO)  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        c.signed_body({**FIELDS, "amount": Decimal("1")}, TRADE_NO)  # type: ignore[dict-item]
    for reserved in ("sign", "timestamp"):
        with pytest.raises(ValueError, match=reserved):
            c.signed_body({**FIELDS, reserved: "x"}, TRADE_NO)
    with pytest.raises(ValueError, match="tradeNo"):
        c.signed_body({**FIELDS, "tradeNo": "other"}, TRADE_NO)
    assert c.signed_body({**FIELDS, "tradeNo": TRADE_NO}, TRADE_NO)["tradeNo"] == TRADE_NO
    for bad in ("", "x" * 33, "has space", "semi;colon"):
        with pytest.raises(ValueError, match="tradeNo"):
            c.signed_body(FIELDS, bad)


def test_submit_sends_exactly_the_signed_strings(provider: FakeProvider) -> None:
    provider.reply(answer("0015", desc="CREATED"))
    spy = SpySession()
    c = VexoraClient(provider.url + "/", MERCHANT, SECRET, timeouts=(1.5, 7.0), session=spy)
    before = int(time.time() * 1000)
    result = c.submit({**FIELDS, "customerName": "タロウ"}, TRADE_NO)
    after = int(time.time() * 1000)

    assert result == PayoutResult(
        trade_no=TRADE_NO,
        platform_trade_no="2tjba3vz6wm6hx3l",
        status="0015",
        message="CREATED",
        state=State.PROCESSING,
        amount=None,
    )
    (seen,) = provider.seen
    assert (seen.method, seen.path) == ("POST", "/v1/vexora/disbursements")
    assert seen.headers["Merchantno"] == MERCHANT
    assert seen.headers["Content-Type"].startswith("application/json")
    sent = seen.json()
    assert set(sent) == {*FIELDS, "tradeNo", "timestamp", "sign"}
    assert all(isinstance(v, str) for v in sent.values())
    assert sent["customerName"] == "タロウ"
    assert sent["tradeNo"] == TRADE_NO
    assert before <= int(sent["timestamp"]) <= after
    assert verify(sent, SECRET)
    assert not verify(sent, "another-secret")
    assert [kw["timeout"] for kw in spy.sent] == [(1.5, 7.0)]
    assert [kw["allow_redirects"] for kw in spy.sent] == [False]


def test_every_call_passes_the_configured_timeouts(provider: FakeProvider) -> None:
    spy = SpySession()
    c = VexoraClient(provider.url, MERCHANT, SECRET, timeouts=(0.25, 9.5), session=spy)
    provider.reply(answer("0015"))
    provider.reply(answer("0000", amount="5"))
    provider.reply({"code": "0000", "success": True, "data": {"availableAmount": "1"}})
    c.submit(FIELDS, TRADE_NO)
    c.query(TRADE_NO)
    c.balance()
    assert [kw["timeout"] for kw in spy.sent] == [(0.25, 9.5)] * 3


@pytest.mark.parametrize(
    ("status", "state"),
    [("0015", State.PROCESSING), ("0000", State.SUCCEEDED), ("00029", State.FAILED)],
)
@pytest.mark.parametrize("spelling", ["desc", "message"])
def test_each_documented_data_status(
    client: VexoraClient, provider: FakeProvider, status: str, state: State, spelling: str
) -> None:
    provider.reply(answer(status, **{spelling: "REJECTED_TRANSACTION"}))
    result = client.submit(FIELDS, TRADE_NO)
    assert (result.status, result.state, result.message) == (status, state, "REJECTED_TRANSACTION")


def test_desc_wins_over_message_and_missing_text_is_empty(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(answer("0015", desc="CREATED", message="Processing"))
    assert client.submit(FIELDS, TRADE_NO).message == "CREATED"
    provider.reply(answer("0015"))
    assert client.submit(FIELDS, TRADE_NO).message == ""


@pytest.mark.parametrize("status", ["0001", "9999", "", None, 15, "0015 "])
def test_unknown_data_status_is_outcome_unknown(
    client: VexoraClient, provider: FakeProvider, status: Any
) -> None:
    provider.reply(answer(status))
    with pytest.raises(OutcomeUnknown) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert type(caught.value) is OutcomeUnknown


def test_success_flag_as_string(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply({**answer("0015"), "success": "true"})
    assert client.submit(FIELDS, TRADE_NO).state is State.PROCESSING
    provider.reply({**answer("0015"), "success": "false"})
    with pytest.raises(OutcomeUnknown, match="success=false"):
        client.submit(FIELDS, TRADE_NO)
    provider.reply({**answer("0015"), "success": False})
    with pytest.raises(OutcomeUnknown, match="success=false"):
        client.submit(FIELDS, TRADE_NO)


def test_an_answer_about_another_trade_no_is_not_trusted(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(answer("0000", tradeNo="someoneElse"))
    with pytest.raises(OutcomeUnknown, match="another tradeNo"):
        client.submit(FIELDS, TRADE_NO)


# --- top-level codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [answers.CODE_BAD_SIGN, answers.CODE_UNKNOWN_MERCHANT, answers.CODE_IP_NOT_ALLOWED]
)
def test_systemic_codes_are_configuration_rejected(
    client: VexoraClient, provider: FakeProvider, code: str
) -> None:
    provider.reply(refusal(code, "sign error"))
    with pytest.raises(ConfigurationRejected) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert (caught.value.code, caught.value.message) == (code, "sign error")
    assert "sign error" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_request_failed_is_a_final_rejection_not_systemic(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(refusal(answers.CODE_REQUEST_FAILED, "invalid bankCode"))
    with pytest.raises(Rejected) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert type(caught.value) is Rejected
    assert (caught.value.code, caught.value.message) == ("8000", "invalid bankCode")
    assert caught.value.status_code == 200


def test_a_documented_rejection_in_a_4xx_body_is_still_classified(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(refusal(answers.CODE_REQUEST_FAILED, "bad amount"), status=400)
    with pytest.raises(Rejected) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert caught.value.status_code == 400


def test_duplicate_trade_no_is_already_submitted(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(refusal(answers.CODE_DUPLICATE_TRADE_NO, "duplicate order"))
    with pytest.raises(AlreadySubmitted) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert isinstance(caught.value, OutcomeUnknown)
    assert caught.value.code == "4005"


@pytest.mark.parametrize(
    ("code", "msg"),
    [
        (answers.CODE_SYSTEM_ERROR, "system error, retry later"),
        ("7777", "sign verification failed"),  # unknown code, "sign" in text: NOT systemic
        ("4999", "merchant ip whitelist"),
        (answers.CODE_ORDER_NOT_FOUND, "order not found"),  # makes no sense for a submit
        (None, "no code at all"),
    ],
)
def test_system_error_and_unknown_codes_are_outcome_unknown(
    client: VexoraClient, provider: FakeProvider, code: str | None, msg: str
) -> None:
    provider.reply(refusal(code, msg) if code else {"msg": msg, "success": False})
    with pytest.raises(OutcomeUnknown) as caught:
        client.submit(FIELDS, TRADE_NO)
    # A code we do not know is a refusal of the request (Refused, an OutcomeUnknown: the
    # circuit breaker counts it); 5000 and no code say nothing of the kind.
    known = code in (None, answers.CODE_SYSTEM_ERROR)
    assert type(caught.value) is (OutcomeUnknown if known else Refused)
    assert caught.value.code == code


def test_numeric_code_is_read_as_text(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply({"msg": "fail", "code": 8000, "success": False})
    with pytest.raises(Rejected) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert caught.value.code == "8000"


def test_provider_text_is_redacted(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply(refusal("8000", "account 5464438554636 / mobile 6281245907765 invalid"))
    with pytest.raises(Rejected) as caught:
        client.submit(FIELDS, TRADE_NO)
    text = f"{caught.value} {caught.value!r} {caught.value.message}"
    assert "5464438554636" not in text and "6281245907765" not in text
    assert "****4636" in caught.value.message


# --- HTTP-level failures ----------------------------------------------------------------


def test_429_is_rate_limited_with_retry_after(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply("slow down", status=429, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert isinstance(caught.value, NotSent)
    assert caught.value.retry_after == 7.0
    assert caught.value.status_code == 429

    provider.reply(answer("0015"), status=429)
    with pytest.raises(RateLimited) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_outcome_unknown_even_with_a_rejection_body(
    client: VexoraClient, provider: FakeProvider, status: int
) -> None:
    provider.reply(refusal(answers.CODE_REQUEST_FAILED), status=status)
    with pytest.raises(OutcomeUnknown) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert type(caught.value) is OutcomeUnknown
    assert caught.value.status_code == status


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, "<html>gateway</html>"),
        (200, "[1, 2]"),
        (200, ""),
        (200, '{"code": "0000", "data": '),
        (400, "<html>bad request</html>"),
        (403, "Forbidden"),
        (404, ""),
    ],
)
def test_unparseable_body_is_outcome_unknown(
    client: VexoraClient, provider: FakeProvider, status: int, body: str
) -> None:
    provider.reply(body, status=status)
    with pytest.raises(OutcomeUnknown) as caught:
        client.submit(FIELDS, TRADE_NO)
    assert type(caught.value) is OutcomeUnknown
    assert caught.value.status_code == status


def test_accepted_code_with_a_4xx_status_is_outcome_unknown(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(answer("0000"), status=409)
    with pytest.raises(OutcomeUnknown):
        client.submit(FIELDS, TRADE_NO)


def test_redirects_are_not_followed(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply("", status=307, headers={"Location": "/elsewhere"})
    with pytest.raises(OutcomeUnknown):
        client.submit(FIELDS, TRADE_NO)
    assert [s.path for s in provider.seen] == ["/v1/vexora/disbursements"]


# --- transport failures on real sockets ------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class RawServer:
    """A TCP server whose every connection is handed to ``behave`` in a thread."""

    def __init__(self, behave: Callable[[socket.socket], None], backlog: int = 16) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.port = self.listener.getsockname()[1]
        self.behave = behave
        self.connections: list[socket.socket] = []
        self.requests_read = 0

    def serve(self) -> RawServer:
        def run() -> None:
            while True:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                self.connections.append(conn)
                threading.Thread(target=self.behave, args=(conn,), daemon=True).start()

        threading.Thread(target=run, daemon=True).start()
        return self

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(rest) < length:
            rest += conn.recv(65536)
        self.requests_read += 1
        return data

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    made: list[RawServer] = []

    def make(behave: Callable[[RawServer, socket.socket], None]) -> RawServer:
        server = RawServer(lambda conn: behave(server, conn))
        made.append(server)
        return server.serve()

    yield make
    for server in made:
        server.close()


def _client(port: int, read_timeout: float = 5.0) -> VexoraClient:
    return VexoraClient(f"http://127.0.0.1:{port}", MERCHANT, SECRET, timeouts=(1.0, read_timeout))


def _never_mentions_secrets(exc: BaseException) -> None:
    text = f"{exc} {exc!r}"
    for secret in (SECRET, FIELDS["bankAccountNo"], FIELDS["mobile"]):
        assert secret not in text


def test_connection_refused_is_not_sent(closed_port: int) -> None:
    with pytest.raises(NotSent) as caught:
        _client(closed_port).submit(FIELDS, TRADE_NO)
    assert type(caught.value) is NotSent
    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    _never_mentions_secrets(caught.value)


def test_a_transport_failure_is_logged_with_the_trade_no_in_its_field(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # In the text of a log line the tradeNo's digit runs are masked: its field is not.
    with caplog.at_level(logging.WARNING, logger="worker.provider.vexora"), pytest.raises(NotSent):
        _client(closed_port).submit(FIELDS, TRADE_NO)
    (record,) = caplog.records
    assert record.__dict__["trade_no"] == TRADE_NO


def test_connect_timeout_is_not_sent() -> None:
    # A listener with a full accept queue: Linux drops further SYNs, so connect() hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.05)
    c = VexoraClient(f"http://127.0.0.1:{port}", MERCHANT, SECRET, timeouts=(0.3, 5.0))
    try:
        with pytest.raises(NotSent) as caught:
            c.submit(FIELDS, TRADE_NO)
        if not isinstance(caught.value.__cause__, requests.ConnectTimeout):
            pytest.skip("this kernel does not drop SYNs on a full backlog")
        assert type(caught.value) is NotSent
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_read_timeout_is_outcome_unknown(raw_server: Callable[..., RawServer]) -> None:
    server = raw_server(lambda srv, conn: srv.read_request(conn))  # reads, never answers
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown) as caught:
        _client(server.port, read_timeout=0.3).submit(FIELDS, TRADE_NO)
    assert time.monotonic() - started >= 0.3
    assert type(caught.value) is OutcomeUnknown
    assert isinstance(caught.value.__cause__, requests.ReadTimeout)
    assert server.requests_read == 1  # the request did arrive
    _never_mentions_secrets(caught.value)


@pytest.mark.parametrize("hard_reset", [True, False], ids=["RST", "FIN"])
def test_closed_after_the_request_was_read_is_outcome_unknown(
    raw_server: Callable[..., RawServer], hard_reset: bool
) -> None:
    def behave(srv: RawServer, conn: socket.socket) -> None:
        srv.read_request(conn)
        if hard_reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = raw_server(behave)
    with pytest.raises(OutcomeUnknown) as caught:
        _client(server.port).submit(FIELDS, TRADE_NO)
    assert type(caught.value) is OutcomeUnknown
    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    assert server.requests_read == 1
    _never_mentions_secrets(caught.value)


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        b'{"code": "0000"',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"this is not http\r\n\r\n",
    ],
    ids=["truncated", "bad-chunk", "not-http"],
)
def test_broken_answers_are_outcome_unknown(
    raw_server: Callable[..., RawServer], reply: bytes
) -> None:
    def behave(srv: RawServer, conn: socket.socket) -> None:
        srv.read_request(conn)
        conn.sendall(reply)
        conn.close()

    server = raw_server(behave)
    with pytest.raises(OutcomeUnknown) as caught:
        _client(server.port).submit(FIELDS, TRADE_NO)
    assert type(caught.value) is OutcomeUnknown


# --- query and balance ----------------------------------------------------------------


def test_query_request_shape_and_amount(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply(answer("0000", amount="100000.50", successTime="1728611805322"))
    result = client.query(TRADE_NO)
    assert result.state is State.SUCCEEDED
    assert result.amount == Decimal("100000.50")
    assert str(result.amount) == "100000.50"
    (seen,) = provider.seen
    assert (seen.method, seen.path) == ("POST", "/v1/vexora/queryPayOutResult")
    assert seen.headers["Merchantno"] == MERCHANT
    sent = seen.json()
    assert set(sent) == {"tradeNo", "timestamp", "sign"}
    assert sent["tradeNo"] == TRADE_NO
    assert all(isinstance(v, str) for v in sent.values())
    assert verify(sent, SECRET)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"orderAmount": "150", "payAmount": "148.5"}, Decimal("150")),
        ({"payAmount": "148.50"}, Decimal("148.50")),
        ({"amount": 100000.1}, Decimal("100000.1")),  # a JSON number, never via binary float
        ({"amount": 250}, Decimal("250")),
        ({}, None),
    ],
)
def test_query_amount_spellings(
    client: VexoraClient, provider: FakeProvider, data: dict[str, Any], expected: Decimal | None
) -> None:
    provider.reply(answer("0015", **data))
    result = client.query(TRADE_NO)
    assert result.amount == expected
    if expected is not None:
        assert isinstance(result.amount, Decimal)
        assert str(result.amount) == str(expected)


def test_query_garbage_amount_is_outcome_unknown(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(answer("0000", amount="lots"))
    with pytest.raises(OutcomeUnknown, match="amount"):
        client.query(TRADE_NO)


def test_query_of_unknown_trade_no_is_not_found(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(refusal(answers.CODE_ORDER_NOT_FOUND, "order not exist"))
    with pytest.raises(NotFound) as caught:
        client.query(TRADE_NO)
    assert caught.value.code == "4004"


@pytest.mark.parametrize("code", [answers.CODE_REQUEST_FAILED, "1001", "9999", 4010])
def test_a_query_refused_with_a_code_not_in_not_found_codes_is_not_known(
    client: VexoraClient, provider: FakeProvider, code: str | int
) -> None:
    # Issue 21.6: the provider's code for an unknown tradeNo is not documented; only the
    # codes of NOT_FOUND_CODES (4004 by default) say "no record". Any other refusal of
    # the query is not known: never "no record" (which resubmits, retries, decides
    # FAILED), never a failed payout. (Before, every code but 5000 read as no record.)
    provider.reply(refusal(code, "order does not exist"))  # type: ignore[arg-type]
    with pytest.raises(OutcomeUnknown) as caught:
        client.query(TRADE_NO)
    assert caught.value.code == str(code)
    assert not isinstance(caught.value, NotFound | Rejected)


@pytest.mark.parametrize("code", [answers.CODE_REQUEST_FAILED, "9001"])
def test_the_codes_of_not_found_codes_show_no_record(provider: FakeProvider, code: str) -> None:
    settings = sandbox_settings(provider.url, {"NOT_FOUND_CODES": f" 4004, {code}"})
    assert settings.not_found_codes == {"4004", code}
    client = VexoraClient.from_settings(settings, "ID")
    for answer in (code, answers.CODE_ORDER_NOT_FOUND):
        provider.reply(refusal(answer, "order does not exist"))
        with pytest.raises(NotFound) as caught:
            client.query(TRADE_NO)
        assert caught.value.code == answer
    provider.reply(refusal("1001", "order does not exist"))
    with pytest.raises(OutcomeUnknown):
        client.query(TRADE_NO)
    # A submit refused with one of them is not "no record": its outcome is not known.
    provider.reply(refusal("9001", "whatever"))
    with pytest.raises(OutcomeUnknown):
        client.submit(FIELDS, TRADE_NO)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (refusal(answers.CODE_ORDER_NOT_FOUND), 500),  # a 5xx is no answer, whatever it says
        (refusal(answers.CODE_SYSTEM_ERROR), 200),  # "retry later": the provider did not look
        ("<html>Not Found</html>", 404),  # not the provider's JSON
    ],
)
def test_a_query_that_failed_is_not_a_missing_record(
    client: VexoraClient, provider: FakeProvider, body: Any, status: int
) -> None:
    provider.reply(body, status=status)
    with pytest.raises(OutcomeUnknown):
        client.query(TRADE_NO)


def test_a_systemic_refusal_of_a_query_is_a_configuration_fault(
    client: VexoraClient, provider: FakeProvider
) -> None:
    provider.reply(refusal(answers.CODE_BAD_SIGN, "sign error"))
    with pytest.raises(ConfigurationRejected):
        client.query(TRADE_NO)


def test_balance(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply(
        {
            "code": "0000",
            "msg": "success",
            "success": True,
            "data": {"availableAmount": "1234.56", "freezeAmount": 10.1, "unsettledAmount": 0},
        }
    )
    assert client.balance() == Balance(Decimal("1234.56"), Decimal("10.1"), Decimal("0"))
    (seen,) = provider.seen
    assert seen.path == "/v1/vexora/queryBalance"
    sent = seen.json()
    assert set(sent) == {"timestamp", "sign"}
    assert verify(sent, SECRET)


def test_balance_defaults_and_errors(client: VexoraClient, provider: FakeProvider) -> None:
    provider.reply({"code": "0000", "data": {"availableAmount": "5"}})
    assert client.balance() == Balance(Decimal("5"), Decimal("0"), Decimal("0"))
    provider.reply({"code": "0000", "data": {"freezeAmount": "5"}})
    with pytest.raises(OutcomeUnknown, match="availableAmount"):
        client.balance()
    provider.reply({"code": "0000", "data": {"availableAmount": "NaN"}})
    with pytest.raises(OutcomeUnknown):
        client.balance()
    provider.reply(refusal(answers.CODE_IP_NOT_ALLOWED))
    with pytest.raises(ConfigurationRejected):
        client.balance()


# --- construction ---------------------------------------------------------------------


def test_from_settings_and_repr_hide_the_secret(provider: FakeProvider) -> None:
    settings = Settings(
        vexora_base_url=provider.url,
        vexora_merchant_no="M-9",
        vexora_app_secret="s3cr3t",
        connect_timeout=0.5,
        read_timeout=4.0,
    )
    c = VexoraClient.from_settings(settings, "ID")
    assert (c.base_url, c.merchant_no, c.timeouts) == (provider.url, "M-9", (0.5, 4.0))
    assert "s3cr3t" not in repr(c)
    provider.reply(answer("0015"))
    c.submit(FIELDS, TRADE_NO)
    sent = provider.seen[0].json()
    assert verify(sent, "s3cr3t")
    assert provider.seen[0].headers["Merchantno"] == "M-9"


def test_each_market_is_signed_and_sent_as_its_own_account(provider: FakeProvider) -> None:
    env = {
        "VEXORA_BASE_URL": provider.url,
        "VEXORA_MERCHANT_NO": "M-ALL",
        "VEXORA_APP_SECRET": "secret-all",
        "VEXORA_AR_BASE_URL": provider.url + "/ar/",
        "VEXORA_AR_MERCHANT_NO": "M-AR",
        "VEXORA_AR_APP_SECRET": "secret-ar",
    }
    settings = load_settings(env)
    for market, path, merchant, secret in [
        ("AR", "/ar" + vexora.SUBMIT_PATH, "M-AR", "secret-ar"),
        ("KH", vexora.SUBMIT_PATH, "M-ALL", "secret-all"),
    ]:
        provider.seen.clear()
        provider.reply(answer("0015"))
        with VexoraClient.from_settings(settings, market) as client:
            client.submit(FIELDS, TRADE_NO)
        (seen,) = provider.seen
        assert (seen.path, seen.headers["Merchantno"]) == (path, merchant)
        assert verify(seen.json(), secret)


def test_own_session_is_pooled_without_retries_and_closed() -> None:
    c = VexoraClient("http://x", MERCHANT, SECRET, timeouts=(1.0, 2.0), pool_size=17)
    adapter = c._session.get_adapter("https://x")
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    assert adapter._pool_maxsize == 17  # type: ignore[attr-defined]
    assert adapter.max_retries.total == 0
    assert adapter.max_retries.read is False
    closed: list[bool] = []
    c._session.close = lambda: closed.append(True)  # type: ignore[method-assign]
    c.close()
    assert closed == [True]

    mine = requests.Session()
    mine.close = lambda: closed.append(False)  # type: ignore[method-assign]
    VexoraClient("http://x", MERCHANT, SECRET, timeouts=(1.0, 2.0), session=mine).close()
    assert closed == [True]  # a session passed in stays open


# --- the whole call within its deadline (issue 23) ------------------------------------


def _reply(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n"


def test_a_body_dripped_past_the_calls_deadline_is_outcome_unknown(
    raw_server: Callable[..., RawServer],
) -> None:
    body = json.dumps(answer("0015", tradeNo=TRADE_NO)).encode()

    def drip(srv: RawServer, conn: socket.socket) -> None:
        srv.read_request(conn)
        conn.sendall(_reply(body))
        try:
            for byte in body:  # each byte well within the read timeout
                conn.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            return  # the client gave up and closed

    server = raw_server(drip)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown) as caught:
        _client(server.port, read_timeout=0.4).submit(FIELDS, TRADE_NO)
    # Ended by its deadline (connect + read timeouts), not after the whole drip.
    assert time.monotonic() - started < len(body) * 0.05 / 2
    assert isinstance(caught.value.__cause__, requests.ReadTimeout)
    assert server.requests_read == 1


def test_a_whole_answer_leaves_its_connection_for_the_next_call(
    raw_server: Callable[..., RawServer],
) -> None:
    def keep_alive(srv: RawServer, conn: socket.socket) -> None:
        while srv.read_request(conn):
            body = json.dumps(answer("0015", tradeNo=TRADE_NO)).encode()
            conn.sendall(_reply(body) + body)

    server = raw_server(keep_alive)
    client = _client(server.port)
    for _ in range(3):
        assert client.submit(FIELDS, TRADE_NO).state is State.PROCESSING
    assert (server.requests_read, len(server.connections)) == (3, 1)
