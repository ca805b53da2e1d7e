"""Signing in: argon2id hashes, the session cookie's flags, throttling after failures,
idle sessions, CSRF tokens, roles, and the trusted proxy's header."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.unit.console.conftest import PASSWORD, post, sign_in
from worker.celery import runtime
from worker.core.defaults import SIGNIN_FAILURES
from worker.core.exceptions import InputError


def test_passwords_are_stored_as_argon2id_and_checked(app: Flask) -> None:
    stored = runtime.ledger().user("vera")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    with pytest.raises(InputError, match="exists already"):
        runtime.accounts().add("vera", "viewer", PASSWORD, by="test")
    with pytest.raises(InputError, match="at least 12"):
        runtime.accounts().add("short", "viewer", "pw", by="test")
    with pytest.raises(InputError, match="no role"):
        runtime.accounts().add("x", "root", PASSWORD, by="test")


def test_sign_in_sets_a_strict_httponly_cookie_and_pages_need_it(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/batches")
    assert page.status_code == 302 and page.headers["Location"].startswith("/signin")
    signed = sign_in(client, "vera")
    assert signed.status_code == 302
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind HTTPS it is Secure
    assert client.get("/batches").status_code == 200


def test_sign_in_over_https_marks_the_cookie_secure(app: Flask) -> None:
    import re

    client = app.test_client()
    page = client.get("/signin", base_url="https://localhost").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    signed = client.post(
        "/signin",
        base_url="https://localhost",
        headers={"Referer": "https://localhost/signin"},
        data={"name": "vera", "password": PASSWORD, "csrf_token": found.group(1)},
    )
    assert signed.status_code == 302, signed.get_data(as_text=True)
    assert "Secure" in signed.headers["Set-Cookie"]


def test_a_wrong_password_is_refused_and_repeated_failures_are_throttled(app: Flask) -> None:
    client = app.test_client()
    wrong = sign_in(client, "vera", "not the password")
    assert wrong.status_code == 401 and "wrong name or password" in wrong.get_data(as_text=True)
    unknown = sign_in(client, "nobody", "not the password")
    assert "wrong name or password" in unknown.get_data(as_text=True)  # the same words
    for _ in range(SIGNIN_FAILURES - 1):
        sign_in(client, "vera", "not the password")
    throttled = sign_in(client, "vera")  # the right password, too late
    assert throttled.status_code == 401
    assert "too many failed sign-ins" in throttled.get_data(as_text=True)
    assert sign_in(app.test_client(), "otto").status_code == 302  # another user is not


def test_an_idle_session_expires(app: Flask, signed_in: Any, monkeypatch: Any) -> None:
    client: FlaskClient = signed_in("vera")
    assert client.get("/batches").status_code == 200
    monkeypatch.setattr("worker.console.auth.CONSOLE_IDLE_TIMEOUT", -1)
    assert client.get("/batches").status_code == 302


def test_a_form_without_its_csrf_token_is_refused(app: Flask, signed_in: Any) -> None:
    client = signed_in("otto")
    refused = client.post("/pauses/pause", data={"reason": "forged"})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    assert runtime.pause_switch().records() == {}


def test_a_viewer_sees_no_action_and_a_forged_post_is_403(app: Flask, signed_in: Any) -> None:
    client = signed_in("vera")
    page = client.get("/pauses").get_data(as_text=True)
    assert "Pause submissions" not in page and "<button" in page  # only "Sign out"
    forged = post(client, "/pauses", "/pauses/pause", reason="forged")
    assert forged.status_code == 403
    assert runtime.pause_switch().records() == {}


def test_a_trusted_proxy_names_the_user(app: Flask, monkeypatch: Any) -> None:
    monkeypatch.setenv("CONSOLE_TRUSTED_HEADER", "X-Remote-User")
    monkeypatch.setenv("CONSOLE_TRUSTED_PROXIES", "127.0.0.1")
    runtime.get_settings.cache_clear()
    client = app.test_client()
    named = client.get("/batches", headers={"X-Remote-User": "vera"})
    assert named.status_code == 200 and "vera (viewer)" in named.get_data(as_text=True)
    elsewhere = client.get(
        "/batches", headers={"X-Remote-User": "vera"}, environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert elsewhere.status_code == 302  # not from a trusted proxy: sign in
    assert client.get("/batches", headers={"X-Remote-User": "nobody"}).status_code == 302
