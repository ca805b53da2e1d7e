"""``disburse users add`` and ``list``, the password read from stdin."""

from __future__ import annotations

import redis
from click.testing import CliRunner

from worker import cli
from worker.celery import runtime


def test_users_add_reads_the_password_from_stdin_and_stores_a_hash(broker: redis.Redis) -> None:
    runner = CliRunner()
    added = runner.invoke(
        cli.main, ["users", "add", "dana", "--role", "approver"], input="a long secret pw\n"
    )
    assert added.exit_code == 0, added.output
    assert added.output == "user dana added as approver\n"
    stored = runtime.ledger().user("dana")
    assert stored is not None and stored.role == "approver"
    assert stored.password_hash.startswith("$argon2id$")
    assert runtime.accounts().sign_in("dana", "a long secret pw", "127.0.0.1").name == "dana"
    again = runner.invoke(
        cli.main, ["users", "add", "dana", "--role", "viewer"], input="another secret pw\n"
    )
    assert again.exit_code == 1 and "exists already" in again.output
    short = runner.invoke(cli.main, ["users", "add", "eve", "--role", "viewer"], input="short\n")
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    role = runner.invoke(cli.main, ["users", "add", "eve", "--role", "root"], input="x\n")
    assert role.exit_code == 1
    assert runner.invoke(cli.main, ["users", "list"]).output == "dana  approver\n"
