"""A whole disburse system on this machine: private Redis and PostgreSQL, the sandbox
provider, the webhook receiver, and real ``celery worker`` / ``celery beat`` processes
started from the Procfile's own lines (:data:`PROCESSES`). ``disburse up``, the demo,
the integration and chaos tests and the benchmarks all run on it.

The database's schema is upgraded before any process starts (the processes only
check it, see :mod:`worker.db.readiness`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg
import requests

from worker.core.redact import mask_text
from worker.core.states import FINAL_STATES
from worker.db import migrate
from worker.db.readiness import unreachable
from worker.dev.credentials import sandbox_env
from worker.dev.postgres_server import PostgresServer
from worker.dev.redis_server import RedisServer, free_port
from worker.dev.service import Service
from worker.sandbox import Sandbox, SandboxConfig

# The Procfile's lines, here so that an installed package (no Procfile in site-packages)
# starts the same processes; tests/unit/test_packaging.py keeps the two the same.
# web: waitress refuses a body over the receiver's 64 KiB itself, before buffering it, and
# leaves a proxy's forwarding headers for the receiver to see (worker.web.listeners).
PROCESSES = {
    "web": "waitress-serve --listen=127.0.0.1:${PORT:-8701} --threads=8"
    " --max-request-body-size=65537 --no-clear-untrusted-proxy-headers"
    " --call worker.web.listeners:web_app",
    "worker": "celery -A worker.celery.main worker -Q submit,resubmit,reconcile,outbox"
    " --concurrency=4 --loglevel=INFO",
    "beat": "celery -A worker.celery.main beat --loglevel=INFO",
    # Optional: the operations console (CONSOLE_HOST:CONSOLE_PORT); the engine runs without it.
    "console": "disburse console",
}

# The module each Procfile program runs (``python -m``).
_MODULES = {"celery": "celery", "waitress-serve": "waitress", "disburse": "worker"}


def procfile_commands(text: str | None = None) -> dict[str, list[str]]:
    """Each process's command line, from a Procfile's ``text`` (None: :data:`PROCESSES`)."""
    if text is None:
        return {name: shlex.split(command) for name, command in PROCESSES.items()}
    commands: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            commands[name.strip()] = shlex.split(command)
    return commands


class LocalCluster(Service):
    """``database_url`` None: a private PostgreSQL (``postgres``, restartable through
    :meth:`restart_postgres`); given: that database, upgraded at start, never stopped.
    ``redis_url`` likewise (None: a private Redis, ``redis``). ``provider_url`` given:
    that payout provider (its credentials and details API from the environment), no
    sandbox; else the sandbox, its credentials handed to every process (``env``).

    ``port`` is the web receiver's (None: a free one). The sandbox delivers webhooks
    there when the cluster runs the receiver, or when ``port`` is given for one started
    elsewhere (``honcho start``); a payout's own notifyUrl is its public face only, so
    it stays HTTPS as JP and KH require.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        concurrency: int = 4,
        beat: bool = True,
        web: bool = True,
        console: bool = False,
        appendonly: bool = False,
        database_url: str | None = None,
        redis_url: str | None = None,
        provider_url: str | None = None,
        sandbox: SandboxConfig | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.worker_count = workers
        self.concurrency = concurrency
        self.with_beat = beat
        self.with_web = web
        self.with_console = console
        self.console_port = free_port() if console else None
        self.console: subprocess.Popen[bytes] | None = None
        self.redis: RedisServer | None = None
        if redis_url is None:
            self.redis = RedisServer(appendonly=appendonly)
            redis_url = self.redis.url
        self.redis_url = redis_url
        self.postgres: PostgresServer | None = None
        if database_url is None:
            # Not durable (fsync off): its data survives the server's crash, not the machine's.
            self.postgres = PostgresServer(durable=False)
            database_url = self.postgres.url
        self.database_url = database_url
        self.provider_url = provider_url
        self.sandbox: Sandbox | None = None
        if provider_url is None:
            self.sandbox = Sandbox(sandbox or SandboxConfig())
        self.extra_env = dict(env or {})
        self._tmp = tempfile.TemporaryDirectory(prefix="disburse-cluster-")
        self.log_dir = log_dir or Path(self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._deliver_webhooks = web or port is not None
        self.web_port = port or free_port()
        self.workers: list[subprocess.Popen[bytes] | None] = []
        self.beats: list[subprocess.Popen[bytes]] = []
        self.web: subprocess.Popen[bytes] | None = None
        self._commands = procfile_commands()

    @property
    def console_url(self) -> str | None:
        return f"http://127.0.0.1:{self.console_port}/" if self.console_port else None

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/notify"

    def env(self) -> dict[str, str]:
        """The environment every process of this cluster reads its settings from."""
        env = {"REDIS_URL": self.redis_url, "DATABASE_URL": self.database_url}
        if self.sandbox is not None:
            # The sandbox's own credentials, handed in: no setting defaults to them.
            env.update(sandbox_env(self.sandbox.url, self.sandbox.config))
            # JP and KH require HTTPS: the public URL stays HTTPS; the sandbox delivers
            # the webhooks to the local receiver (SandboxConfig.webhook_target).
            env["NOTIFY_URL"] = "https://disburse.example/notify"
        else:
            # Its credentials and details API come from the environment the cluster
            # was started in.
            env["VEXORA_BASE_URL"] = str(self.provider_url)
        env.update(
            {
                "RECONCILE_EVERY": "5",
                "RECONCILE_AFTER": "5",
                "SWEEP_AFTER": "60",
                "PORT": str(self.web_port),
                **({"CONSOLE_PORT": str(self.console_port)} if self.console_port else {}),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, extra: list[str], log_name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env()}
        command = [_expand(part, env) for part in self._commands[name]] + extra
        # This interpreter runs the program's module: no console script on PATH needed.
        # -P: the working directory is not put first on sys.path, as for the script.
        command[:1] = [sys.executable, "-P", "-m", _MODULES[command[0]]]
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> LocalCluster:
        """Start everything; should any part fail, stop what started, then raise."""
        try:
            if self.redis is not None:
                self.redis.start()
            if self.postgres is not None:
                self.postgres.start()
            migrate.upgrade(self.database_url)
            if self.sandbox is not None:
                if self._deliver_webhooks:
                    self.sandbox.config.webhook_target = self.receiver_url
                self.sandbox.start()
            if self.with_web:
                self.web = self._spawn("web", [], "web.log")
            for index in range(self.worker_count):
                self.workers.append(None)
                self.start_worker(index)
            if self.with_beat:
                self.start_beat()
            if self.with_console:
                self.console = self._spawn("console", [], "console.log")
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self, index: int, *, queues: str | None = None) -> None:
        """Start worker ``index`` from the Procfile's line; ``queues`` (tests): consuming
        only these instead of the line's."""
        extra = [f"--concurrency={self.concurrency}", f"--hostname=w{index}@%h",
                 "--without-mingle", "--without-gossip"]  # fmt: skip
        if queues is not None:
            extra += ["-Q", queues]
        self.workers[index] = self._spawn("worker", extra, f"worker{index}.log")

    def start_beat(self) -> subprocess.Popen[bytes]:
        schedule = self.log_dir / f"beat-schedule-{len(self.beats)}"
        beat = self._spawn("beat", [f"--schedule={schedule}"], f"beat{len(self.beats)}.log")
        self.beats.append(beat)
        return beat

    def kill_worker(self, index: int) -> None:
        """SIGKILL the worker and its pool children, as a crashed machine would."""
        process = self.workers[index]
        if process is not None:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        self.workers[index] = None

    def restart_redis(self, down_for: float = 0.0) -> None:
        """Stop Redis (SIGTERM: AOF flushed), keep it down ``down_for`` s, start it again."""
        if self.redis is None:
            raise RuntimeError("this cluster runs on a given REDIS_URL: not its to restart")
        self.redis.stop()
        time.sleep(down_for)
        self.redis.start()

    def restart_postgres(self, down_for: float = 0.0, *, crash: bool = False) -> None:
        """Stop the private PostgreSQL (a fast shutdown, or SIGKILL with ``crash``: recovery
        from the WAL at start), keep it down ``down_for`` s, start it again."""
        if self.postgres is None:
            raise RuntimeError("this cluster runs on a given DATABASE_URL: not its to restart")
        if crash:
            self.postgres.kill()
        else:
            self.postgres.stop()
        time.sleep(down_for)
        self.postgres.start()

    def exited(self) -> dict[str, int | None]:
        """Processes of this cluster that are not running: name -> exit code (None: never
        started, or killed by :meth:`kill_worker` and not started again)."""
        processes = [(f"worker{i}", w) for i, w in enumerate(self.workers)]
        processes += [(f"beat{i}", b) for i, b in enumerate(self.beats)]
        if self.with_web:
            processes.append(("web", self.web))
        if self.with_console:
            processes.append(("console", self.console))
        return {
            name: None if p is None else p.returncode
            for name, p in processes
            if p is None or p.poll() is not None
        }

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every worker answers a ping and the web receiver its health check."""
        from worker.celery.app import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            if len(replies) >= sum(1 for w in self.workers if w is not None):
                break
        else:
            raise TimeoutError("workers did not come up; see " + str(self.log_dir))
        while self.with_web and not _answers(f"http://127.0.0.1:{self.web_port}/healthz"):
            if time.monotonic() > deadline:
                raise TimeoutError("the web receiver did not come up; see " + str(self.log_dir))
            time.sleep(0.1)

    def stop(self) -> None:
        running = [*self.workers, *self.beats, self.web, self.console]
        processes = [p for p in running if p is not None]
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self.workers, self.beats, self.web, self.console = [], [], None, None
        if self.sandbox is not None:
            self.sandbox.stop()
        if self.redis is not None:
            self.redis.close()
        if self.postgres is not None:
            self.postgres.close()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()


def _expand(part: str, env: Mapping[str, str]) -> str:
    # Procfile lines use ${PORT:-8701}; expand with this cluster's environment.
    if "${PORT" in part:
        start = part.index("${PORT")
        end = part.index("}", start)
        part = part[:start] + env["PORT"] + part[end + 1 :]
    return part


def refuse_open_payouts(database_url: str) -> int:
    """0 when the sandbox may run on the ledger at ``database_url``; else says why not on
    stderr and returns the exit status (1: it holds payouts not yet final, which the
    workers would send to the sandbox, which would 'pay' them; 2: out of reach)."""
    count = 0
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            ledger = conn.execute("SELECT to_regclass('orders') IS NOT NULL").fetchone()
            if ledger and ledger[0]:
                row = conn.execute(
                    "SELECT count(*) FROM orders WHERE state <> ALL(%s)", [sorted(FINAL_STATES)]
                ).fetchone()
                count = int(row[0]) if row else 0
    except psycopg.OperationalError as exc:
        print(f"error: {unreachable(database_url, exc)}", file=sys.stderr)
        return 2
    if not count:
        return 0
    payouts = f"{count} payout{'' if count == 1 else 's'}"
    print(f"error: DATABASE_URL ({mask_text(database_url)}) holds {payouts} not yet final, "
          "which the sandbox provider must not take: use an empty database (unset "
          "DATABASE_URL for a private one), or set VEXORA_BASE_URL to their provider",
          file=sys.stderr)  # fmt: skip
    return 1


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1.0).status_code == 200
    except requests.RequestException:
        return False


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
