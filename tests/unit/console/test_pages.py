"""The console's pages and actions on the session's PostgreSQL and Redis: each action
goes through the function the command line calls and is audited with the signed-in
user's name and the console's address."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

import worker
from tests.unit.console.conftest import post
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.ledger.audit import Action


def held_batch(creator: str, amounts: tuple[str, ...] = ("25000000", "100000")) -> str:
    """A batch of ``creator`` needing two approvals under the policy (conftest.POLICY)."""
    rows = sample_rows("ID", len(amounts), start=7000)
    given = [
        {**row, "amount": amount, "bankAccountNo": f"{7000 + i:013d}"}
        for i, (row, amount) in enumerate(zip(rows, amounts, strict=True))
    ]
    result = worker.enqueue_batch("ID", given, operator=creator)
    assert result.batch_id is not None and result.held
    return result.batch_id


def test_two_approvers_approve_and_the_creator_is_refused(app: Flask, signed_in: Any) -> None:
    batch_id = held_batch("carol")
    page = f"/batches/{batch_id}"
    carol = signed_in("carol")
    assert "Approve" in carol.get(page).get_data(as_text=True)
    refused = post(carol, page, f"{page}/approve")
    assert refused.status_code == 303
    assert "carol created batch" in carol.get(page).get_data(as_text=True)
    alice = signed_in("alice")
    post(alice, page, f"{page}/approve", note="checked the invoice")
    shown = alice.get(page).get_data(as_text=True)
    assert "1 of 2 approvals given" in shown and "alice at" in shown
    again = post(alice, page, f"{page}/approve")
    assert again.status_code == 303
    assert "alice approved batch" in alice.get(page).get_data(as_text=True)
    approvals = [
        e for e in runtime.ledger().audit_events(batch_id=batch_id) if e.action == "approve"
    ]
    assert [(e.who, e.origin, e.note) for e in approvals] == [
        ("alice", "console@127.0.0.1", "checked the invoice")
    ]


def test_an_operator_pauses_and_resumes_audited_by_name(app: Flask, signed_in: Any) -> None:
    otto = signed_in("otto")
    post(otto, "/pauses", "/pauses/pause", reason="bank maintenance")
    page = otto.get("/pauses").get_data(as_text=True)
    assert "bank maintenance (by otto" in page and "Resume submissions" in page
    post(otto, "/pauses", "/pauses/resume")
    assert "nothing is paused" in otto.get("/pauses").get_data(as_text=True)
    audited = runtime.ledger().audit_events()
    actions = [(e.action, e.who, e.origin, e.note) for e in audited if e.action != "policy_loaded"]
    assert actions[-2:] == [
        ("pause", "otto", "console@127.0.0.1", "bank maintenance"),
        ("resume", "otto", "console@127.0.0.1", None),
    ]
    assert "bank maintenance" in otto.get("/audit").get_data(as_text=True)
    approver = signed_in("alice")  # an approver is not an operator
    assert post(approver, "/pauses", "/pauses/pause", reason="x").status_code == 403


def test_batches_and_a_payout_show_masked_data_only(app: Flask, signed_in: Any) -> None:
    result = worker.enqueue_batch("ID", sample_rows("ID", 3))
    assert result.batch_id is not None
    vera = signed_in("vera")
    listed = vera.get("/batches").get_data(as_text=True)
    assert result.batch_id in listed and "<progress" in listed
    assert result.batch_id in vera.get("/batches?state=held&market=ID").get_data(as_text=True)
    assert result.batch_id not in vera.get("/batches?market=JP").get_data(as_text=True)
    assert result.batch_id not in vera.get("/batches?to=2000-01-01").get_data(as_text=True)
    batch = vera.get(f"/batches/{result.batch_id}").get_data(as_text=True)
    assert "HELD" in batch and "0 of 3 settled" in batch  # the policy holds every batch
    assert "Cancel unsent payouts" not in batch and "Approve" not in batch  # a viewer
    reference = sample_rows("ID", 1)[0]["reference"]
    found = vera.get(f"/payout?q={reference}")
    text = found.get_data(as_text=True)
    assert found.status_code == 200 and result.trade_nos[0] in text and "HELD" in text
    for row in sample_rows("ID", 3):
        assert row["bankAccountNo"] not in text and row["mobile"] not in text
    assert vera.get("/payout?q=nope").status_code == 404
    csv = vera.get(f"/batches/{result.batch_id}/export.csv")
    assert csv.status_code == 200 and csv.get_data(as_text=True).startswith("reference,tradeNo,")
    assert vera.get("/review").status_code == 200 and vera.get("/deliveries").status_code == 200


def test_an_operator_cancels_a_batch_and_a_viewer_cannot(app: Flask, signed_in: Any) -> None:
    result = worker.enqueue_batch("ID", sample_rows("ID", 2), hold=True)
    page = f"/batches/{result.batch_id}"
    assert post(signed_in("vera"), page, f"{page}/cancel").status_code == 403
    otto = signed_in("otto")
    post(otto, page, f"{page}/cancel")
    assert "cancelled 2 unsent payouts" in otto.get(page).get_data(as_text=True)
    order = worker.get_order(result.trade_nos[0])
    assert order is not None and order.state is State.CANCELLED
    audited = runtime.ledger().audit_events(batch_id=result.batch_id)
    (cancel,) = [e for e in audited if e.action == "cancel"]
    assert (cancel.who, cancel.origin) == ("otto", "console@127.0.0.1")


def test_the_live_progress_fragment_polls_until_settled(app: Flask, signed_in: Any) -> None:
    result = worker.enqueue_batch("ID", sample_rows("ID", 1))
    vera = signed_in("vera")
    fragment = vera.get(f"/batches/{result.batch_id}/progress").get_data(as_text=True)
    assert fragment.startswith('<section id="progress"') and 'hx-trigger="every 2s"' in fragment
    assert "<html" not in fragment  # a fragment, not a page
    assert result.batch_id is not None
    worker.cancel(result.batch_id, operator="otto")
    settled = vera.get(f"/batches/{result.batch_id}/progress").get_data(as_text=True)
    assert "settled" in settled and "hx-trigger" not in settled


def test_an_operator_pauses_one_provider_account(app: Flask, signed_in: Any) -> None:
    from worker.core.config import get_settings

    account = get_settings().account("ID")
    otto = signed_in("otto")
    post(otto, "/pauses", "/pauses/pause", reason="ID bank down", account=account.name)
    page = otto.get("/pauses").get_data(as_text=True)
    assert f"provider account {account.name}: ID bank down (by otto" in page
    assert set(runtime.pause_switch().records()) == {account.name}
    assert runtime.pause_switch(account).paused()
    again = post(otto, "/pauses", "/pauses/pause", reason="second", account=account.name)
    assert again.status_code == 303
    assert "already paused for provider account" in otto.get("/pauses").get_data(as_text=True)
    assert runtime.pause_switch().records()[account.name].reason == "ID bank down"
    post(otto, "/pauses", "/pauses/resume", account=account.name)
    assert runtime.pause_switch().records() == {}
    assert post(otto, "/pauses", "/pauses/pause", reason="x", account="nope").status_code == 400
    pauses = [e for e in runtime.ledger().audit_events() if e.action == "pause"]
    assert [e.facts for e in pauses[-2:]] == [
        {"changed": True, "account": account.name},
        {"changed": False, "account": account.name},
    ]


def test_an_admin_adds_users_and_no_one_else_may(app: Flask, signed_in: Any) -> None:
    ada = signed_in("ada")
    post(ada, "/users", "/users", name="gil", role="operator", password="a long password!")
    assert "user gil added as operator" in ada.get("/users").get_data(as_text=True)
    stored = runtime.ledger().user("gil")
    assert stored is not None and stored.role == "operator"
    post(ada, "/users", "/users", name="hal", role="operator", password="short")
    assert "at least 12 characters" in ada.get("/users").get_data(as_text=True)
    otto = signed_in("otto")
    assert otto.get("/users").status_code == 403
    assert (
        post(otto, "/pauses", "/users", name="x", role="admin", password="p" * 12).status_code
        == 403
    )


def test_the_audit_page_shows_the_newest_first_and_pages_back(app: Flask, signed_in: Any) -> None:
    ledger = runtime.ledger()
    for n in range(55):
        ledger.audit(Action.PAUSE, "otto", "console@test", note=f"pause number {n:02d}")
    vera = signed_in("vera")
    page = vera.get("/audit").get_data(as_text=True)
    assert page.index("pause number 54") < page.index("pause number 53")
    assert "pause number 04" not in page and "Older" in page
    older = re.search(r'href="(/audit\?before=\d+)"', page)
    assert older is not None
    assert "pause number 04" in vera.get(older.group(1)).get_data(as_text=True)
