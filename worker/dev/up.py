"""``disburse up``: the whole system on this machine, for your own files, until Ctrl-C.

A :class:`~worker.dev.cluster.LocalCluster` kept running: a private Redis and
PostgreSQL (unless ``REDIS_URL`` / ``DATABASE_URL`` name your own), the sandbox
provider (unless ``VEXORA_BASE_URL`` names a provider), the web receiver, workers and
beat. The sandbox delivers its webhooks to the receiver, so payouts settle by webhook
while every payout's ``notifyUrl`` stays HTTPS, as JP and KH require. It prints one
line per process and the environment for a second shell, and writes it to ``.env``
(which every ``disburse`` command run in that folder reads) unless a ``.env`` of
yours is there. ``servers_only``: no web, worker or beat, for ``honcho start`` on the
Procfile (honcho reads the ``.env``, whose ``PORT`` puts ``web`` where the sandbox
delivers). ``replicated``: PostgreSQL with a streaming standby, Redis with a replica and
three Sentinels (worker.dev.replicated), for ``disburse failover`` to fail over by hand.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.core.redact import mask_text
from worker.dev.cluster import LocalCluster, refuse_open_payouts
from worker.dev.first_login import console_lines
from worker.dev.redis_server import free_port
from worker.sandbox import SandboxConfig

# Passed on to the processes as given (``--replicated`` sets it too).
_PASSED_ON = ("REDIS_SENTINEL_MASTER",)
# The first line of every .env this command writes: one without it is the user's own.
MARK = "# Written by `disburse up`"
# Settings the cluster chooses for its processes that a user's environment overrides.
_YOURS_WIN = ("NOTIFY_URL", "RECONCILE_EVERY", "RECONCILE_AFTER", "SWEEP_AFTER")
# What a second shell needs (PYTHONUNBUFFERED is only for the processes' logs).
_NOT_FOR_SHELLS = ("PYTHONUNBUFFERED",)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the web server binds: connections of an earlier run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ours(env_file: Path) -> bool:
    """True when ``env_file`` is absent or was written by this command."""
    try:
        with env_file.open(encoding="utf-8") as text:
            return text.readline().startswith(MARK)
    except FileNotFoundError:
        return True


def _writer(env_file: Path) -> int | None:
    """The pid of the `disburse up` that wrote ``env_file`` (None: unknown or not ours)."""
    try:
        with env_file.open(encoding="utf-8") as text:
            found = re.match(re.escape(MARK) + r" \(pid (\d+)\)", text.readline())
    except FileNotFoundError:
        return None
    return int(found.group(1)) if found else None


def _running_elsewhere(env_file: Path) -> int | None:
    """The pid of another `disburse up`, still running, whose .env ``env_file`` is."""
    pid = _writer(env_file)
    if pid is None or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def env_text(env: dict[str, str]) -> str:
    """``env`` as a .env file (python-dotenv's and honcho's syntax)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"{MARK} (pid {os.getpid()}) at {stamp}; removed when it stops.",
        "# The servers named here run only while `disburse up` does.",
        *(f"{name}={shlex.quote(value)}" for name, value in env.items()),
    ]
    return "\n".join(lines) + "\n"


def run(
    *,
    workers: int,
    port: int,
    log_dir: Path,
    env_file: Path,
    servers_only: bool = False,
    failure_ratio: float = 0.05,
    replicated: bool = False,
    latency_median: float = 0.0,
    latency_sigma: float = 0.6,
) -> int:
    """Start everything, print where it is, wait for Ctrl-C or SIGTERM, stop everything.

    Returns 0 after a requested stop, 1 for a database the sandbox must not run on, 2
    when something could not start or died."""
    if port and not _port_free(port):
        print(f"error: port {port} is in use: pass --port N (0: any free port)", file=sys.stderr)
        return 2
    from dotenv import dotenv_values

    write_env = _ours(env_file)
    # A second `disburse up` here (another --port) leaves the first one's .env alone.
    other = _running_elsewhere(env_file)
    found = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.exists() else {}
    if write_env:
        # An earlier run's .env names servers that are gone: none of it is yours, also
        # where it got into the environment (every command loads the .env it finds).
        given = {k: v for k, v in os.environ.items() if found.get(k) != v}
    else:
        given = {**found, **os.environ}  # yours: read, as every command reads it
    if replicated and (given.get("DATABASE_URL") or given.get("REDIS_URL")):
        print("error: --replicated starts its own servers: unset DATABASE_URL and REDIS_URL",
              file=sys.stderr)  # fmt: skip
        return 2
    if given.get("DATABASE_URL") and not given.get("VEXORA_BASE_URL"):
        code = refuse_open_payouts(given["DATABASE_URL"])
        if code:
            return code
    log_dir = log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    servers = Replicas(log_dir) if replicated else None
    try:
        if servers is not None:
            print("disburse up: starting the replicated servers ...", flush=True)
            given.update(servers.start())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        sandbox = SandboxConfig(
            failure_ratio=failure_ratio,
            latency_median=latency_median,
            latency_sigma=latency_sigma,
        )
        return _run(given, write_env, workers, port, log_dir, env_file, servers_only,
                    sandbox, servers, other)  # fmt: skip
    finally:
        if servers is not None:
            servers.close()


def _run(
    given: dict[str, str],
    write_env: bool,
    workers: int,
    port: int,
    log_dir: Path,
    env_file: Path,
    servers_only: bool,
    sandbox: SandboxConfig,
    servers: Replicas | None,
    other: int | None,
) -> int:
    cluster = LocalCluster(
        workers=0 if servers_only else workers,
        beat=not servers_only,
        web=not servers_only,
        console=not servers_only,
        redis_url=given.get("REDIS_URL") or None,
        database_url=given.get("DATABASE_URL") or None,
        provider_url=given.get("VEXORA_BASE_URL") or None,
        sandbox=sandbox,
        port=port or None,
        env={
            # `honcho start` runs the Procfile's console: on a free port, as the web's.
            **({"CONSOLE_PORT": str(free_port())} if servers_only else {}),
            **{name: given[name] for name in (*_YOURS_WIN, *_PASSED_ON) if given.get(name)},
        },
        log_dir=log_dir,
    )
    _show_sandbox_warnings()
    print("disburse up: starting ...", flush=True)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            cluster.start()
            os.environ.update(cluster.env())
            from worker.celery import runtime

            runtime.reset()
            cluster.wait_ready(timeout=60)
            env = {k: v for k, v in cluster.env().items() if k not in _NOT_FOR_SHELLS}
            if write_env and other is None:
                _write_private(env_file, env_text(env))
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _print_ready(cluster, env, env_file.resolve(), write_env, servers_only,
                     servers is not None, other)  # fmt: skip
        if servers is not None:
            servers.print_ready()
        return _wait(cluster)
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in handlers:  # a second Ctrl-C must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        print("stopping ...", flush=True)
        cluster.close()
        if write_env and _ours(env_file) and _writer(env_file) in (None, os.getpid()):
            env_file.unlink(missing_ok=True)
        print(f"stopped: every process and server it started; logs kept in {log_dir}", flush=True)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


class Replicas:
    """The servers of ``--replicated``, and the state file ``disburse failover`` reads."""

    def __init__(self, log_dir: Path) -> None:
        from worker.dev.replicated import ReplicatedPostgres, ReplicatedRedis

        self.log_dir = log_dir
        self.postgres = ReplicatedPostgres(synchronous=True)
        self.redis = ReplicatedRedis()

    def start(self) -> dict[str, str]:
        """Start both; the settings that point the cluster at them."""
        from worker.dev.replicated import SENTINEL_MASTER, RunState

        try:
            self.postgres.start()
            self.redis.start()
        except BaseException:
            self.close()
            raise
        RunState.of(self.postgres, self.redis).write(self.log_dir)
        return {
            "DATABASE_URL": self.postgres.url(),
            "REDIS_URL": self.redis.url,
            "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
        }

    def print_ready(self) -> None:
        from worker.dev.replicated import STATE_FILE

        pg, redis = self.postgres, self.redis
        print(f"\nReplicated (state for `disburse failover` in {self.log_dir / STATE_FILE}):")
        print(f"  postgres  primary port {pg.primary.port} (pid {pg.primary.pid}), "
              f"standby port {pg.standby.port}, synchronous")  # fmt: skip
        print(f"  redis     master port {redis.master.port}, replica port {redis.replica.port}, "
              f"Sentinels {', '.join(map(str, redis.sentinel_ports))}")  # fmt: skip
        print(f"Fail one over: disburse failover postgres|redis --log-dir {self.log_dir}")
        sys.stdout.flush()

    def close(self) -> None:
        from worker.dev.replicated import STATE_FILE

        self.redis.close()
        self.postgres.close()
        (self.log_dir / STATE_FILE).unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Only we may read it, from the first byte on: a URL of yours may carry a password."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT


def _wait(cluster: LocalCluster) -> int:
    """Until Ctrl-C or SIGTERM (0), or until a process of the cluster exits (2)."""
    while True:
        time.sleep(0.5)
        exited = cluster.exited()
        if exited:
            for name, code in exited.items():
                print(
                    f"error: {name} exited (code {code}); see {cluster.log_dir / name}.log",
                    file=sys.stderr,
                )
            return 2


def _show_sandbox_warnings() -> None:
    """The in-process sandbox's warnings (failed webhook deliveries) on stderr."""
    logger = logging.getLogger("worker.sandbox")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))  # it says "sandbox ..."
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _print_ready(
    cluster: LocalCluster,
    env: dict[str, str],
    env_file: Path,
    written: bool,
    servers_only: bool,
    replicated: bool = False,
    other: int | None = None,
) -> None:
    def line(name: str, what: str) -> None:
        print(f"  {name:<9} {what}")

    def log(name: str) -> str:
        return f"log {cluster.log_dir / name}.log"

    print("disburse up: running; Ctrl-C stops everything")
    private = "private: its data is gone when this stops"
    if replicated:
        private = "replicated, " + private
    yours = private if replicated else "yours"
    line("redis", f"{mask_text(cluster.redis_url)}  ({private if cluster.redis else yours})")
    line(
        "postgres",
        f"{mask_text(cluster.database_url)}  ({private if cluster.postgres else yours})",
    )
    if cluster.sandbox is not None:
        ratio = cluster.sandbox.config.failure_ratio
        median, sigma = cluster.sandbox.config.latency_median, cluster.sandbox.config.latency_sigma
        line(
            "sandbox",
            f"{cluster.sandbox.url}  provider simulator: {ratio:.0%} of payouts FAILED on "
            f"purpose; webhooks to {cluster.receiver_url}"
            + (f"; answers after a median {median:g} s (sigma {sigma:g})" if median else ""),
        )
    else:
        line("provider", f"{mask_text(str(cluster.provider_url))}  (yours: no sandbox)")
    if servers_only:
        line("web", f"not started: `honcho start` runs it on port {cluster.web_port} (PORT)")
    elif cluster.web is not None:
        line("web", f"{cluster.receiver_url}  pid {cluster.web.pid}  {log('web')}")
    for index, worker in enumerate(cluster.workers):
        if worker is not None:
            line(f"worker{index}", f"pid {worker.pid}  concurrency {cluster.concurrency}  "
                 f"{log(f'worker{index}')}")  # fmt: skip
    for index, beat in enumerate(cluster.beats):
        line("beat", f"pid {beat.pid}  {log(f'beat{index}')}")
    console_port = cluster.console_port or env.get("CONSOLE_PORT")
    for said in console_lines(f"http://127.0.0.1:{console_port}/" if console_port else None):
        line("console", said + ("  (started by `honcho start`)" if servers_only else ""))
    print()
    if other is not None:
        print(f"{env_file} is the disburse up's running as pid {other}: left alone.")
    elif written:
        print(f"wrote {env_file}: every disburse command run in {env_file.parent} reads it.")
    else:
        print(f"{env_file} is yours (not written by disburse up): left alone.")
    print("For a shell elsewhere, paste:")
    for name, value in env.items():
        print(f"  export {name}={shlex.quote(mask_text(value))}")
    activate = _activate()
    if servers_only:
        print(f"\nNext, in a second shell in this directory: {activate}honcho start")
    else:
        print("\nNext, in a second shell in this directory, e.g.:")
        print(f"  {activate}disburse template --market ID -o payouts.csv")
        print("  disburse enqueue payouts.csv --market ID")
    sys.stdout.flush()


def _activate() -> str:
    """``. .venv/bin/activate && `` when the virtualenv running this is not on PATH."""
    bin_dir = Path(sys.executable).parent
    script = shutil.which("disburse")
    if not (bin_dir / "activate").is_file() or (script and Path(script).parent == bin_dir):
        return ""
    try:
        shown = bin_dir.relative_to(Path.cwd())
    except ValueError:
        shown = bin_dir
    return f". {shlex.quote(str(shown / 'activate'))} && "
