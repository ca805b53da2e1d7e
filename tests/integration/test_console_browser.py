"""The operations console in a real Chromium (Playwright), on one cluster with its
console process, shared by the scenarios: sign in and watch a batch settle; two
approvers release a two-approval batch while its creator is refused; an operator pauses
and resumes; a REVIEW payout is resolved; a viewer finds no action and is refused a
forged POST; a form without its CSRF token is refused. The screenshots of the README
(docs/screenshots/) are taken here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import worker
from tests.support.browser import chromium_path
from tests.support.cluster import SharedServers, fast_sandbox, running_cluster
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
POLICY = """
[markets.ID]
max_payout = "50000000"
approvals = [
  { total_over = "0", approvals = 1 },
  { total_over = "500000000", payout_over = "20000000", approvals = 2 },
]
"""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WAIT = 30_000  # ms a page may take to show what the test waits for


@pytest.fixture(scope="module")
def console(
    shared_servers: SharedServers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    policy = tmp_path_factory.mktemp("console") / "policy.toml"
    policy.write_text(POLICY)
    # A payout nobody has a record of may be decided FAILED at once (tests do not wait).
    env = {"DISBURSE_POLICY": str(policy), "NO_RECORD_GRACE": "0.001"}
    with running_cluster(
        shared_servers, env=env, sandbox=fast_sandbox(failure_ratio=0.0), console=True, workers=1
    ) as cluster:
        accounts = runtime.accounts()
        for name, role in [("vera", "viewer"), ("otto", "operator"), ("alice", "approver"),
                           ("bob", "approver"), ("carol", "approver")]:  # fmt: skip
            accounts.add(name, role, PASSWORD, by="test")
        yield cluster


@pytest.fixture(scope="module")
def browser(console: LocalCluster) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(playwright), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def signed_in(browser: Browser, console: LocalCluster, name: str) -> Page:
    page = browser.new_page(base_url=str(console.console_url).rstrip("/"))
    page.goto("/batches")
    expect(page).to_have_url(re.compile(r"/signin"), timeout=WAIT)  # the console's up
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Batches")).to_be_visible(timeout=WAIT)
    return page


def rows(count: int, start: int, amount: str) -> list[dict[str, Any]]:
    found = sample_rows("ID", count, start=start)
    for i, row in enumerate(found):
        row["amount"] = amount
        row["bankAccountNo"] = f"{start + i:013d}"
    return found


def test_two_approvers_release_a_batch_the_creator_may_not_and_it_settles(
    browser: Browser, console: LocalCluster
) -> None:
    big = worker.enqueue_batch("ID", rows(4, 100, "25000000"), operator="carol")
    assert big.batch_id is not None and big.held_reason == "needs 2 approvals, none given yet"
    path = f"/batches/{big.batch_id}"

    carol = signed_in(browser, console, "carol")
    carol.goto(path)
    carol.get_by_role("button", name="Approve").click()
    expect(carol.get_by_text(f"carol created batch {big.batch_id}")).to_be_visible()
    carol.close()

    alice = signed_in(browser, console, "alice")
    alice.goto(path)
    alice.get_by_label("Note").fill("invoices checked")
    alice.get_by_role("button", name="Approve").click()
    expect(alice.locator("#approvals")).to_contain_text("1 of 2 approvals given")
    alice.screenshot(path=str(SCREENSHOTS / "batch-held.png"), full_page=True)

    bob = signed_in(browser, console, "bob")
    bob.goto(path)
    bob.get_by_role("button", name="Approve").click()
    # The page follows the batch live (htmx) until every payout is final.
    expect(bob.locator("#progress .state")).to_have_text("settled", timeout=60_000)
    expect(bob.locator("#progress")).to_contain_text("SUCCEEDED")
    bob.screenshot(path=str(SCREENSHOTS / "batch.png"), full_page=True)
    bob.goto("/batches")
    expect(bob.get_by_role("link", name=big.batch_id)).to_be_visible()
    bob.screenshot(path=str(SCREENSHOTS / "batches.png"), full_page=True)

    approvals = [e for e in runtime.ledger().audit_events(batch_id=big.batch_id)
                 if e.action == "approve"]  # fmt: skip
    assert [(e.who, e.origin.startswith("console@")) for e in approvals] == [
        ("alice", True),
        ("bob", True),
    ]
    assert len(console.sandbox.payouts()) >= 4  # type: ignore[union-attr]
    # The payout page: history and the masked beneficiary, never the full account.
    bob.goto(f"/payout?q={big.trade_nos[0]}")
    expect(bob.get_by_role("heading", name=big.trade_nos[0])).to_be_visible()
    text = bob.content()
    assert "SUCCEEDED" in text and "0000000000100" not in text
    bob.screenshot(path=str(SCREENSHOTS / "payout.png"), full_page=True)
    for page in (alice, bob):
        page.close()


def test_an_operator_pauses_and_resumes(browser: Browser, console: LocalCluster) -> None:
    otto = signed_in(browser, console, "otto")
    otto.goto("/pauses")
    otto.get_by_label("Reason").fill("bank maintenance")
    otto.get_by_role("button", name="Pause submissions").click()
    expect(otto.locator("#pauses")).to_contain_text("bank maintenance (by otto")
    otto.screenshot(path=str(SCREENSHOTS / "pause.png"), full_page=True)
    assert "all" in runtime.pause_switch().records()
    otto.get_by_role("button", name="Resume submissions").click()
    expect(otto.locator("#pauses")).to_contain_text("nothing is paused")
    assert runtime.pause_switch().records() == {}
    otto.close()


def test_a_review_payout_is_resolved(browser: Browser, console: LocalCluster) -> None:
    ledger = runtime.ledger()
    worker.pause("making a REVIEW payout", operator="test")  # no worker sends it meanwhile
    try:
        made = worker.enqueue_batch("ID", rows(1, 300, "100000"), operator="carol")
        assert made.batch_id is not None
        worker.approve(made.batch_id, operator="alice", check_balance=False)
        (trade_no,) = made.trade_nos
        assert ledger.claim(trade_no)[0].moved
        assert ledger.transition(trade_no, State.UNKNOWN, source="submit").moved
        reason = "pending past its deadline"
        assert ledger.transition(trade_no, State.REVIEW, source="lookup", reason=reason).moved
    finally:
        worker.resume(operator="test")
    otto = signed_in(browser, console, "otto")
    otto.goto("/review")
    expect(otto.get_by_text(reason)).to_be_visible()
    otto.screenshot(path=str(SCREENSHOTS / "review.png"), full_page=True)
    otto.get_by_label("Failed").check()
    otto.get_by_label("Note").fill("the bank has no record")
    otto.get_by_role("button", name="Decide").click()
    expect(otto.get_by_text(f"{trade_no} (reference")).to_be_visible(timeout=WAIT)
    order = ledger.get(trade_no)
    assert order is not None and order.state is State.FAILED
    events = ledger.history(trade_no)
    assert events[-1].facts is not None and events[-1].facts["operator"] == "otto"
    otto.close()


def test_a_viewer_has_no_actions_and_forged_posts_are_refused(
    browser: Browser, console: LocalCluster
) -> None:
    held = worker.enqueue_batch("ID", rows(1, 400, "100000"), operator="carol")
    vera = signed_in(browser, console, "vera")
    for path in ("/pauses", "/review", f"/batches/{held.batch_id}", "/deliveries"):
        vera.goto(path)
        buttons = vera.get_by_role("button").all_inner_texts()
        assert buttons == ["Sign out"], (path, buttons)
    # A forged POST with a valid token (the sign-out form's): refused by role.
    token = vera.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = vera.request.post("/pauses/pause", form={"csrf_token": str(token), "reason": "x"})
    assert forged.status == 403
    vera.close()
    otto = signed_in(browser, console, "otto")
    without = otto.request.post("/pauses/pause", form={"reason": "no token"})
    assert without.status == 400
    assert runtime.pause_switch().records() == {}
    otto.close()
