"""Transport failures mapped onto the error tree, and Retry-After (worker.http_client)."""

from __future__ import annotations

from email.utils import formatdate

import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from worker.exceptions import NotSent, OutcomeUnknown
from worker.http_client import from_transport_error, never_sent, parse_retry_after


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0


def test_never_sent_reads_urllib3s_wrapping() -> None:
    refused = requests.ConnectionError(
        MaxRetryError(None, "/", reason=NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    )
    reset = requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
    assert never_sent(refused)
    assert never_sent(requests.ConnectTimeout())
    assert never_sent(requests.exceptions.InvalidURL("bad"))
    assert not never_sent(reset)
    assert not never_sent(requests.ReadTimeout())
    assert not never_sent(requests.exceptions.ChunkedEncodingError())
    assert not never_sent(requests.ConnectionError("something else"))
    assert not never_sent(requests.exceptions.SSLError("mid-stream"))
    assert type(from_transport_error(refused, "x")) is NotSent
    assert type(from_transport_error(reset, "x")) is OutcomeUnknown


def test_transport_messages_name_the_call_and_the_failure_only() -> None:
    timeout = requests.ReadTimeout("HTTPConnectionPool(host='h', port=1): secret=abc")
    error = from_transport_error(timeout, "submit t1")
    assert str(error) == "submit t1: outcome unknown (read timeout after sending)"
    refused = from_transport_error(requests.ConnectTimeout("x?sign=abc"), "query t1")
    assert str(refused) == "query t1: not sent (ConnectTimeout: could not connect)"
