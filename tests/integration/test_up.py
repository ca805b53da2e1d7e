"""``disburse up`` as a user runs it: a real process in its own folder, a file enqueued by
a second process that knows only that folder's ``.env``, payouts settled by the
sandbox's webhooks (JP's HTTPS rule kept), and Ctrl-C or SIGTERM stopping every process
and server it started. And ``--servers-only`` under ``honcho start`` on the Procfile, and
``--replicated`` failed over by hand with ``disburse failover``."""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from dotenv import dotenv_values

from schemas import validate_rows
from worker.core.samples import sample_rows
from worker.core.states import State
from worker.ledger import Ledger

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DISBURSE = str(Path(sys.executable).with_name("disburse"))
# What `disburse up` writes to .env: the second process must get it from there alone.
CLUSTER_VARIABLES = (
    "REDIS_URL", "DATABASE_URL", "VEXORA_BASE_URL", "DETAILS_BASE_URL", "NOTIFY_URL",
    "RECONCILE_EVERY", "RECONCILE_AFTER", "SWEEP_AFTER", "PORT", "CELERY_BROKER_URL",
    "VEXORA_MERCHANT_NO", "VEXORA_APP_SECRET", "DETAILS_API_KEY", "DETAILS_CLIENT_ID",
    "DETAILS_CLIENT_SECRET", "DETAILS_ACCOUNT_ID", "REDIS_SENTINEL_MASTER",
)  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES}
    return {**env, **extra}


class Up:
    """A ``disburse up`` process, its output read line by line."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [DISBURSE, "up", *args],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a shell's foreground job
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {text!r} in the output of disburse up:\n" + self.output)
            self.lines.append(line)

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` as a terminal (Ctrl-C: to the whole foreground group) or kill would."""
        if sig == signal.SIGINT:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self.wait_for("stopped:", timeout=5)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def assert_all_gone(processes: list[psutil.Process]) -> None:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            continue
    assert not alive, "left running: " + "; ".join(alive)


def write_rows(path: Path, market: str, count: int) -> None:
    rows = sample_rows(market, count, seed=11)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def enqueue(folder: Path, market: str, count: int) -> str:
    """A second process, in the folder, with none of the cluster's variables set."""
    path = folder / f"payouts-{market.lower()}.csv"
    write_rows(path, market, count)
    done = subprocess.run(
        [DISBURSE, "enqueue", path.name, "--market", market, "--json"],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["accepted"] == count
    return str(result["batch_id"])


def settle_sources(database_url: str, batches: list[str], timeout: float = 60.0) -> list[str]:
    """The source of each order's final state, once every order of ``batches`` has one."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            (open_orders,) = conn.execute(
                "SELECT count(*) FROM orders WHERE batch_id = ANY(%s)"
                " AND state NOT IN ('SUCCEEDED', 'FAILED')",
                [batches],
            ).fetchone() or (0,)
            if open_orders == 0:
                break
            assert time.monotonic() < deadline, f"{open_orders} orders still open"
            time.sleep(0.2)
        rows = conn.execute(
            "SELECT e.source FROM order_events e JOIN orders o USING (trade_no)"
            " WHERE o.batch_id = ANY(%s) AND e.to_state IN ('SUCCEEDED', 'FAILED')",
            [batches],
        ).fetchall()
    return [source for (source,) in rows]


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A folder of the user's that is not the source tree."""
    yield tmp_path


def test_up_runs_everything_and_a_second_shell_settles_a_file_by_webhook(folder: Path) -> None:
    # No reconcile pass looks anything up for an hour: only webhooks can settle these.
    env = clean_env(RECONCILE_AFTER="3600")
    up = Up(folder, "--port", "0", "--workers", "1", env=env)
    try:
        up.wait_for("Next, in a second shell")
        for name in ("redis", "postgres", "sandbox", "web", "worker0", "beat"):
            assert any(line.startswith(f"  {name} ") for line in up.lines), name
        started = descendants(up.process.pid)
        assert len(started) >= 5  # redis, postgres (and its children), web, worker, beat
        written = dotenv_values(folder / ".env")
        assert written["RECONCILE_AFTER"] == "3600"  # the user's own value passed on
        # The sandbox's credentials, handed in: no setting has a built-in one.
        assert written["VEXORA_MERCHANT_NO"] == "M-SANDBOX"
        assert written["VEXORA_APP_SECRET"] == "sandbox-secret"
        assert written["DETAILS_CLIENT_SECRET"] == "sandbox-client-secret"
        assert (folder / ".env").stat().st_mode & 0o777 == 0o600  # only the user reads it
        assert f"  export DATABASE_URL={written['DATABASE_URL']}" in up.lines
        # The console: its URL and a first login, the password shown once, and it signs in.
        (console,) = [line for line in up.lines if line.startswith("  console ")]
        found = re.search(
            r"(http://127\.0\.0\.1:\d+/)  sign in as admin with password (\S+)", console
        )
        assert found is not None, console
        assert found.group(2) not in (folder / ".env").read_text()
        _wait_console(found.group(1), found.group(2))

        # A second `disburse up` here (as the port-in-use message suggests) leaves this
        # one's .env alone, also when it stops.
        env_before = (folder / ".env").read_text()
        second = Up(folder, "--servers-only", "--port", "0", env=clean_env())
        try:
            second.wait_for("Next, in a second shell")
            assert any("left alone" in line for line in second.lines)
            assert (folder / ".env").read_text() == env_before
            assert second.stop(signal.SIGTERM) == 0
        finally:
            second.kill()
        assert (folder / ".env").read_text() == env_before

        # JP requires an HTTPS notifyUrl: the .env's is HTTPS, the sandbox delivers locally.
        batches = [enqueue(folder, "JP", 6), enqueue(folder, "ID", 6)]
        sources = settle_sources(str(written["DATABASE_URL"]), batches)
        assert len(sources) == 12 and set(sources) == {"webhook"}

        code = up.stop(signal.SIGINT)
    finally:
        up.kill()
    assert code == 0, up.output
    assert_all_gone(started)
    assert not (folder / ".env").exists()  # its servers are gone, so is the file
    assert (folder / "disburse-logs" / "worker0.log").stat().st_size > 0


def test_replicated_servers_are_failed_over_by_hand_and_a_file_still_settles(
    folder: Path,
) -> None:
    up = Up(folder, "--replicated", "--port", "0", "--workers", "1", env=clean_env())
    try:
        up.wait_for("Fail one over:")
        written = dotenv_values(folder / ".env")
        assert str(written["REDIS_URL"]).startswith("sentinel://")
        assert written["REDIS_SENTINEL_MASTER"] == "mymaster"
        database_url = str(written["DATABASE_URL"])
        assert "," in database_url  # the standby and the primary
        started = descendants(up.process.pid)
        for server in ("postgres", "redis"):
            done = subprocess.run(
                [DISBURSE, "failover", server],
                cwd=folder,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0 and "promoted" in done.stdout, done.stdout + done.stderr

        sources = settle_sources(database_url, [enqueue(folder, "ID", 6)])
        assert len(sources) == 6

        code = up.stop(signal.SIGINT)
    finally:
        up.kill()
    assert code == 0, up.output
    assert_all_gone(started)
    assert not (folder / "disburse-logs" / "replicated.json").exists()


def test_servers_only_under_honcho_on_the_procfile(folder: Path) -> None:
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent))
    assert honcho, "honcho is in the dev extra"
    shutil.copy(ROOT / "Procfile", folder / "Procfile")  # the user's checkout has it
    port = str(_free_port())
    up = Up(folder, "--servers-only", "--port", port, env=clean_env(RECONCILE_AFTER="3600"))
    web: subprocess.Popen[bytes] | None = None
    try:
        up.wait_for("honcho start")
        assert dotenv_values(folder / ".env")["PORT"] == port
        started = descendants(up.process.pid)
        with (folder / "honcho.log").open("wb") as log:
            web = subprocess.Popen(
                [honcho, "start"],
                cwd=folder,
                env=clean_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_listening(int(port), web)
        database_url = str(dotenv_values(folder / ".env")["DATABASE_URL"])
        sources = settle_sources(database_url, [enqueue(folder, "KH", 5)])
        log_text = (folder / "honcho.log").read_text()
        assert len(sources) == 5 and set(sources) == {"webhook"}, log_text

        os.killpg(web.pid, signal.SIGINT)
        web.wait(timeout=60)
        code = up.stop(signal.SIGTERM)
    finally:
        if web is not None and web.poll() is None:
            os.killpg(web.pid, signal.SIGKILL)
        up.kill()
    assert code == 0, up.output
    assert_all_gone(started)


def test_a_dotenv_of_the_users_is_read_and_left_alone(folder: Path) -> None:
    mine = "# my settings\nSWEEP_AFTER=77\n"
    (folder / ".env").write_text(mine)
    up = Up(folder, "--servers-only", "--port", "0", env=clean_env())
    try:
        up.wait_for("Next, in a second shell")
        assert "  export SWEEP_AFTER=77" in up.lines
        assert any("is yours (not written by disburse up): left alone" in x for x in up.lines)
        code = up.stop(signal.SIGTERM)
    finally:
        up.kill()
    assert code == 0
    assert (folder / ".env").read_text() == mine


def _wait_console(url: str, password: str) -> None:
    """Until the console answers; then sign in as admin with ``password``."""
    import requests

    session = requests.Session()
    deadline = time.monotonic() + 30
    while True:
        try:
            page = session.get(url + "signin", timeout=2)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the console did not answer"
            time.sleep(0.2)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf_token": token.group(1), "name": "admin", "password": password}
    signed = session.post(url + "signin", data=form, timeout=5)
    assert signed.status_code == 200 and "admin (admin)" in signed.text, signed.text[-500:]


def _free_port() -> int:
    from worker.dev.redis_server import free_port

    return free_port()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "honcho exited"
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"nothing answers on port {port}")


def test_the_sandbox_never_takes_the_open_payouts_of_a_database_of_yours(
    folder: Path, ledger: Ledger, ledger_url: str
) -> None:
    (payout,) = [p for _, p in validate_rows("ID", enumerate(sample_rows("ID", 1)),
                                              notify_url="https://x.example/n")[0]]  # fmt: skip
    ledger.create_orders([payout], batch_id="b-yours", market="ID")
    done = subprocess.run(
        [DISBURSE, "up", "--port", "0"],
        cwd=folder,
        env=clean_env(DATABASE_URL=ledger_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "holds 1 payout not yet final, which the sandbox provider must not take" in (done.stderr)
    assert not (folder / ".env").exists() and "running" not in done.stdout
    assert ledger.state_counts() == {State.QUEUED: 1}  # nothing touched it


def test_a_process_that_dies_stops_everything_and_says_which(folder: Path) -> None:
    up = Up(folder, "--port", "0", "--workers", "1", env=clean_env())
    try:
        up.wait_for("Next, in a second shell")
        started = descendants(up.process.pid)
        (worker,) = [line for line in up.lines if line.startswith("  worker0 ")]
        os.killpg(int(worker.split()[2]), signal.SIGKILL)  # its own session: pid = group
        code = up.process.wait(timeout=60)
        up.wait_for("stopped:", timeout=5)
    finally:
        up.kill()
    assert code == 2
    assert any("error: worker0 exited (code -9); see" in line for line in up.lines)
    assert_all_gone(started)
