"""``disburse review``, ``resolve`` and ``retry`` and the public API behind them, on the
process's own runtime: the session's Redis and ledger database, the payout API a fake
provider on a real port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import worker
from tests import ledger_reads
from tests.unit.fake_provider import FakeProvider, Seen, error, json_response, serving
from tests.unit.ledger_sql import events
from worker import cli
from worker.celery import runtime
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.ledger import Ledger


@pytest.fixture
def provider(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeProvider, dict[str, dict[str, Any]]]]:
    """The fake provider as every account's payout API and the details API; ``answers``
    by tradeNo, the details API's by provider id under ``details:<id>``."""
    answers: dict[str, dict[str, Any]] = {}

    def handler(seen: Seen) -> Any:
        if seen.path.endswith("/access-token/b2b"):
            token = {"access_token": "t", "token_type": "Bearer", "expires_in": "3600"}
            return json_response({"status": 200, "success": True, "data": token})
        if seen.method == "GET":
            found = answers.get("details:" + seen.path.rsplit("/", 1)[-1])
            if found is None:
                return json_response(error(404, "not found"), 404)
            return json_response({"status": 200, "success": True, "data": found})
        trade_no = json.loads(seen.body)["tradeNo"]
        data = answers.get(trade_no)
        if data is None:
            return json_response({"code": "4004", "msg": "order not found", "success": False})
        body = {"code": "0000", "msg": "success", "success": True, "data": data}
        return json_response(body)

    with serving() as fake:
        fake.handler = handler
        monkeypatch.setenv("VEXORA_BASE_URL", fake.url)
        monkeypatch.setenv("DETAILS_BASE_URL", fake.url)
        monkeypatch.setenv("DISBURSE_OPERATOR", "ops-erin")
        # Payouts with no record at the provider are taken as failed (a retry, a FAILED
        # decision) only this long after their last POST: these tests do not wait 30 s.
        monkeypatch.setenv("NO_RECORD_GRACE", "0.001")
        runtime.reset()
        yield fake, answers


def in_review(ledger: Ledger, n: int = 1) -> list[str]:
    result = worker.enqueue_batch("ID", sample_rows("ID", n))
    for trade_no in result.trade_nos:
        assert ledger.claim(trade_no)[0].moved
        assert ledger.transition(trade_no, State.UNKNOWN, source="submit").moved
        reason = "pending past its deadline"
        assert ledger.transition(trade_no, State.REVIEW, source="lookup", reason=reason).moved
    return result.trade_nos


def invoke(*argv: str) -> Any:
    return CliRunner().invoke(cli.main, list(argv))


def test_review_lists_and_resolve_checks_with_the_provider(
    provider: tuple[FakeProvider, dict[str, dict[str, Any]]], ledger: Ledger
) -> None:
    fake, answers = provider
    first, second = in_review(ledger, 2)
    listed = invoke("review")
    assert listed.exit_code == 0
    assert listed.output.count("why: pending past its deadline") == 2
    assert listed.output.index(first) < listed.output.index(second)
    as_json = [json.loads(line) for line in invoke("review", "--json").output.splitlines()]
    assert [item["trade_no"] for item in as_json] == [first, second]
    done_ref = as_json[0]["reference"]
    assert done_ref and done_ref in listed.output  # the reference is shown beside the tradeNo

    answers[first] = {"tradeNo": first, "platFormTradeNo": "p-9", "status": "00029"}
    refused = invoke("resolve", first, "--succeeded", "--note", "the bank says paid")
    assert refused.exit_code == 1
    assert "status query: FAILED, status 00029" in refused.output
    assert "Traceback" not in refused.output
    assert worker.get_order(first).state is State.REVIEW  # type: ignore[union-attr]

    # FAILED needs both APIs' word (21.5): the status query alone is not enough.
    alone = invoke("resolve", first, "--failed", "--note", "bank confirms, not paid")
    assert alone.exit_code == 1 and "details API: no record" in alone.output
    answers["details:p-9"] = {"transaction_id": "p-9", "status": "failed"}
    done = invoke("resolve", first, "--failed", "--note", "bank confirms, not paid")
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"{first} (reference {done_ref}): FAILED (the provider says")
    assert [s.path for s in fake.seen].count("/v1/vexora/queryPayOutResult") == 3
    event = ledger_reads.history(ledger, first)[-1][1]
    assert event == "FAILED operator bank confirms, not paid"
    assert events(ledger, first)[-1][3]["operator"] == "ops-erin"  # DISBURSE_OPERATOR

    # No record of the second at the provider (NO_RECORD_GRACE after its last POST, tiny
    # here): FAILED is what it says too.
    by_name = worker.resolve(second, "failed", note="never sent", operator="frank")
    assert by_name.state is State.FAILED
    assert invoke("review").output == "no payout waits for a person\n"
    again = invoke("resolve", second, "--failed", "--note", "x")
    assert again.exit_code == 1 and "is FAILED, not REVIEW" in again.output


def test_resolve_needs_a_decision_and_says_when_the_provider_is_out_of_reach(
    provider: tuple[FakeProvider, dict[str, dict[str, Any]]],
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (trade_no,) = in_review(ledger)
    assert invoke("resolve", trade_no, "--note", "x").exit_code == 1
    both = invoke("resolve", trade_no, "--failed", "--succeeded", "--note", "x")
    assert both.exit_code == 1 and "not both" in both.output
    assert invoke("resolve", "no-such-payout", "--failed", "--note", "x").exit_code == 1
    assert invoke("review", "--batch", "bnope").exit_code == 1
    monkeypatch.setenv("VEXORA_BASE_URL", "http://127.0.0.1:9")  # nothing listens
    runtime.reset()
    down = invoke("resolve", trade_no, "--failed", "--note", "x")
    assert down.exit_code == 2
    assert "could not ask the provider" in down.output and "nothing changed" in down.output


def test_retry_enqueues_the_failed_again_once(
    provider: tuple[FakeProvider, dict[str, dict[str, Any]]], ledger: Ledger
) -> None:
    result = worker.enqueue_batch("ID", sample_rows("ID", 3))
    assert result.batch_id is not None
    states = (State.FAILED, State.SUCCEEDED, State.FAILED)
    for trade_no, state in zip(result.trade_nos, states, strict=True):
        assert ledger.claim(trade_no)[0].moved
        assert ledger.transition(trade_no, state, source="submit").moved
    retried = invoke("retry", result.batch_id, "--hold", "--json")
    assert retried.exit_code == 0, retried.output
    data = json.loads(retried.output)
    assert data["accepted"] == 2 and data["retried_batch"] == result.batch_id
    assert list(data["retries"]) == [result.trade_nos[0], result.trade_nos[2]]
    again = invoke("retry", result.batch_id)
    assert again.exit_code == 0
    assert again.output.count("not retried: already retried as") == 2
    assert again.output.endswith(f"nothing to retry in batch {result.batch_id}\n")
    held = worker.batch_summary(data["batch_id"])
    assert held is not None and held.counts == {State.HELD: 2}
    assert worker.retry(batch=data["batch_id"]).accepted == 0  # nothing FAILED in it
    assert worker.review(batch=data["batch_id"]) == []
    assert invoke("retry", "bnope").exit_code == 1


def test_retry_names_a_reversed_payout_it_cannot_send_and_exits_1(
    provider: tuple[FakeProvider, dict[str, dict[str, Any]]], ledger: Ledger
) -> None:
    result = worker.enqueue_batch("ID", sample_rows("ID", 2))
    assert result.batch_id is not None
    reversed_, failed = result.trade_nos
    for trade_no, state in ((reversed_, State.SUCCEEDED), (failed, State.FAILED)):
        assert ledger.claim(trade_no)[0].moved
        assert ledger.transition(trade_no, state, source="submit").moved
    assert ledger.transition(reversed_, State.REVERSED, source="lookup").moved
    why = (
        "its fields were erased when it succeeded; "
        "enqueue it again from your records under a new reference"
    )

    retried = invoke("retry", result.batch_id, "--hold")

    assert retried.exit_code == 1, retried.output
    lines = retried.stdout.splitlines()
    reference = worker.get_order(reversed_).reference  # type: ignore[union-attr]
    assert lines[0] == f"{reversed_} (reference {reference}): not retried: {why}"
    assert lines[1].endswith(f": 1 payouts of {result.batch_id} held for approval again")
    assert retried.stderr == (
        f"1 payouts of {result.batch_id} not retried, their fields erased: "
        "enqueue them again from your records\n"
    )
    again = invoke("retry", result.batch_id, "--json")
    assert again.exit_code == 1
    data = json.loads(again.stdout)
    assert data["batch_id"] is None and data["erased"] == [reversed_]
    assert data["not_retried"][reversed_] == why
    assert data["not_retried"][failed].startswith("already retried as ")


def test_retry_refuses_a_payout_the_provider_shows_paid_and_exits_1(
    provider: tuple[FakeProvider, dict[str, dict[str, Any]]], ledger: Ledger
) -> None:
    _, answers = provider
    result = worker.enqueue_batch("ID", sample_rows("ID", 2))
    assert result.batch_id is not None
    paid, never = result.trade_nos
    for trade_no in result.trade_nos:
        assert ledger.claim(trade_no)[0].moved
        assert ledger.transition(trade_no, State.FAILED, source="submit").moved
    # The ledger says FAILED; the provider, asked again, shows the first one paid (21.5).
    answers[paid] = {"tradeNo": paid, "platFormTradeNo": "p-5", "status": "0000"}
    answers["details:p-5"] = {"transaction_id": "p-5", "status": "success"}

    retried = invoke("retry", result.batch_id, "--hold")

    assert retried.exit_code == 1, retried.output
    said = (
        "details API: SUCCEEDED, status success; status query: SUCCEEDED, status 0000: "
        "not failed through both APIs"
    )
    reference = worker.get_order(paid).reference  # type: ignore[union-attr]
    said = f"not retried: the provider says {said}"
    assert retried.stdout.splitlines()[0] == f"{paid} (reference {reference}): {said}"
    assert f": 1 payouts of {result.batch_id} held for approval again" in retried.stdout
    assert retried.stderr.startswith(f"1 payouts of {result.batch_id} not retried: the provider")
    data = json.loads(invoke("retry", result.batch_id, "--json").stdout)
    assert data["refused"] == [paid] and data["not_retried"][never].startswith("already retried")


def test_resolve_and_payout_take_the_reference_too(
    provider: tuple[FakeProvider, dict[str, dict[str, Any]]], ledger: Ledger
) -> None:
    _, answers = provider
    (trade_no,) = in_review(ledger)
    order = worker.get_order(trade_no)
    assert order is not None and order.reference
    answers[trade_no] = {"tradeNo": trade_no, "platFormTradeNo": "p-1", "status": "0000"}
    done = invoke("resolve", order.reference, "--succeeded", "--note", "paid, says the bank")
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"{trade_no} (reference {order.reference}): SUCCEEDED")

    shown = invoke("payout", order.reference)
    assert shown.exit_code == 0, shown.output
    assert trade_no in shown.output and "SUCCEEDED" in shown.output
    assert "REVIEW -> SUCCEEDED" in shown.output and "paid, says the bank" in shown.output
    as_json = json.loads(invoke("payout", trade_no, "--json").output)
    assert as_json["trade_no"] == trade_no and as_json["reference"] == order.reference
    assert [e["to"] for e in as_json["history"]][-1] == "SUCCEEDED"
    assert as_json["history"][-1]["facts"]["operator"] == "ops-erin"
    # The beneficiary is the ledger's masked copy: no full account number anywhere.
    account = sample_rows("ID", 1)[0]["bankAccountNo"]
    assert as_json["beneficiary"] and account not in shown.output + json.dumps(as_json)
    missing = invoke("payout", "nope")
    assert missing.exit_code == 1 and "no payout with the reference or tradeNo" in missing.output
