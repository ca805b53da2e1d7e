"""Two markets on two provider accounts, end to end: each signed, sent and limited as
its own account, and a systemic rejection on one pauses that account only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import worker
from tests.support.cluster import fast_sandbox
from tests.support.waiting import wait_for, wait_settled
from worker import cli
from worker.celery import runtime
from worker.core.exceptions import MarketUnavailable
from worker.core.samples import sample_rows
from worker.core.states import State

pytestmark = pytest.mark.integration

AR_ENV = {
    "VEXORA_RATE_LIMIT": "20/s",  # ID, JP and KH: the plain account
    "VEXORA_AR_MERCHANT_NO": "M-AR",
    "VEXORA_AR_APP_SECRET": "ar-S3CRET-k4",
    "VEXORA_AR_RATE_LIMIT": "5/s",
}


def enqueue(market: str, n: int) -> str:
    result = worker.enqueue_batch(market, sample_rows(market, n))
    assert result.batch_id is not None and result.accepted == n
    return result.batch_id


def trade_nos(batch_id: str) -> set[str]:
    return {t for page in runtime.ledger().iter_batch(batch_id) for t in page}


def counts(batch_id: str) -> dict[State, int]:
    summary = runtime.ledger().batch(batch_id)
    assert summary is not None
    return {state: n for state, n in summary.counts.items() if n}


def test_each_market_is_signed_sent_and_limited_as_its_own_account(
    cluster_factory: Any,
) -> None:
    sandbox = fast_sandbox(failure_ratio=0, accounts={"M-AR": {"app_secret": "ar-S3CRET-k4"}})
    with cluster_factory(env=AR_ENV, sandbox=sandbox) as cluster:
        id_batch, ar_batch = enqueue("ID", 40), enqueue("AR", 20)
        wait_settled(runtime.ledger(), [id_batch, ar_batch], timeout=90)
        assert counts(id_batch) == {State.SUCCEEDED: 40}
        assert counts(ar_batch) == {State.SUCCEEDED: 20}
        paid = cluster.sandbox.payouts()
        merchant = cluster.sandbox.config.merchant_no
        assert {paid[t]["merchant_no"] for t in trade_nos(id_batch)} == {merchant}
        assert {paid[t]["merchant_no"] for t in trade_nos(ar_batch)} == {"M-AR"}
        assert all(p["accepted_count"] == 1 for p in paid.values())
        stats = cluster.sandbox.stats()
        assert stats["bad_sign"] == stats["unknown_merchant"] == 0
        # Each under its own limit (AR's 20 orders at the shared 20/s would burst past 5).
        # The limiter spaces permits on the Redis clock; the sandbox sees them a little
        # later, each delayed by how soon its worker got the CPU, so a request delayed
        # more than its successor can land one more in a sliding second: one of slack.
        assert stats["accounts"]["M-AR"]["max_payout_requests_per_second"] <= 5 + 1
        assert stats["accounts"][merchant]["max_payout_requests_per_second"] <= 20 + 1
        for log in cluster.log_dir.glob("*.log"):
            assert "ar-S3CRET-k4" not in log.read_text(errors="replace"), log.name
        # Each account's notifications verified with its own secret, none refused.
        web = [
            json.loads(line)
            for line in (cluster.log_dir / "web.log").read_text(errors="replace").splitlines()
            if line.startswith("{")
        ]
        webhooks = [r for r in web if r["message"].startswith("webhook")]
        assert not [r for r in webhooks if "refused" in r["message"]]
        assert {r.get("trade_no") for r in webhooks} & trade_nos(ar_batch)


def test_a_systemic_rejection_pauses_only_that_account(
    cluster_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The provider's AR account has another secret than the one configured: bad sign.
    sandbox = fast_sandbox(failure_ratio=0, accounts={"M-AR": {"app_secret": "rotated"}})
    with cluster_factory(env=AR_ENV, sandbox=sandbox) as cluster:
        ar_batch, id_batch = enqueue("AR", 10), enqueue("ID", 30)
        wait_settled(runtime.ledger(), [id_batch], timeout=90)
        assert counts(id_batch) == {State.SUCCEEDED: 30}
        wait_for("AR orders QUEUED", lambda: counts(ar_batch) == {State.QUEUED: 10}, 30)
        paused = runtime.pause_switch().paused()
        assert list(paused) == ["AR"] and "4001" in paused["AR"]
        assert cluster.sandbox.stats()["bad_sign"] >= 1
        assert not trade_nos(ar_batch) & set(cluster.sandbox.payouts())

        capsys.readouterr()
        assert cli.run(["status", ar_batch, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["paused"]["account"] == "AR" and "4001" in status["paused"]["reason"]
        assert cli.run(["status", id_batch, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["paused"] is None

        # The operator fixes the secret and resumes: AR's orders go, each paid once.
        cluster.sandbox.configure(accounts={"M-AR": {"app_secret": "ar-S3CRET-k4"}})
        assert cli.run(["resume"]) == 0
        assert "was paused: provider account AR" in capsys.readouterr().out
        wait_settled(runtime.ledger(), [ar_batch], timeout=60)
        assert counts(ar_batch) == {State.SUCCEEDED: 10}
        paid = cluster.sandbox.payouts()
        assert all(paid[t]["accepted_count"] == 1 for t in trade_nos(ar_batch))


def test_a_market_left_unconfigured_is_refused_and_the_others_are_served(
    cluster_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ID has an account (the plain base URL, its own merchant and secret); AR, JP and KH
    have none: no built-in value fills the gap."""
    sandbox = fast_sandbox(failure_ratio=0)
    env = {
        "VEXORA_MERCHANT_NO": "",
        "VEXORA_APP_SECRET": "",
        "VEXORA_ID_MERCHANT_NO": sandbox.merchant_no,
        "VEXORA_ID_APP_SECRET": sandbox.app_secret,
    }
    with cluster_factory(env=env, sandbox=sandbox, workers=1) as cluster:
        with pytest.raises(MarketUnavailable, match=r"^market AR is not configured: set "):
            worker.enqueue_batch("AR", sample_rows("AR", 3))
        rows = sample_rows("AR", 2)
        path = tmp_path / "ar.csv"
        path.write_text(",".join(rows[0]) + "\n" + "\n".join(",".join(r.values()) for r in rows))
        capsys.readouterr()
        assert cli.run(["enqueue", str(path), "--market", "AR"]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("error: configuration: market AR is not configured: set ")
        assert runtime.ledger().state_counts() == {}

        id_batch = enqueue("ID", 5)
        wait_settled(runtime.ledger(), [id_batch], timeout=60)
        assert counts(id_batch) == {State.SUCCEEDED: 5}
        assert set(cluster.sandbox.payouts()) == trade_nos(id_batch)
        for name, process in (
            ("worker0", "worker"),
            ("beat0", "beat"),
            ("web", "webhook receiver"),
        ):
            log = (cluster.log_dir / f"{name}.log").read_text(errors="replace")
            assert f"{process} serves markets ID (merchant M-SANDBOX)" in log, name
            assert f"{process} does not serve market AR: market AR is not configured" in log
            assert sandbox.app_secret not in log
