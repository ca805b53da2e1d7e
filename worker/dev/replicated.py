"""Replicated servers on this machine, to fail over by hand (``disburse up --replicated``,
``disburse failover``) and in the failover drills (tests/integration/test_failover.py).

* PostgreSQL: a primary and a streaming standby made by ``pg_basebackup -R``, replicated
  synchronously (a commit returns once the standby has it: a failover loses no committed
  transaction) or asynchronously. :meth:`ReplicatedPostgres.fail_over` SIGKILLs the
  primary and promotes the standby, as an operator's or a failover manager's (Patroni,
  a cloud's) promotion would; the engine finds it through its multi-host URL.
* Redis: a master, a replica and three Sentinels (quorum 2), which promote the replica
  on their own once the master has not answered for :data:`DOWN_AFTER_MS`.

Everything listens on free loopback ports and lives in temporary directories, removed
at the close; nothing here touches a server it did not start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
import redis

from worker.dev.postgres_server import PostgresServer, promote_at
from worker.dev.redis_server import RedisServer, free_port, server_binary
from worker.dev.service import Service

SENTINEL_MASTER = "mymaster"
SENTINELS = 3
QUORUM = 2
# The Sentinels' patience: a master silent this long is down, and a failover that has
# not completed in FAILOVER_TIMEOUT_MS is tried again. Small, so that a drill takes
# seconds; production keeps Sentinel's defaults or close (README, "Production").
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
# What `disburse up --replicated` leaves in its log directory for `disburse failover`.
STATE_FILE = "replicated.json"


class SentinelServer(Service):
    """One Sentinel watching the master on ``master_port`` (127.0.0.1)."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.master_port = master_port
        self._dir = tempfile.TemporaryDirectory(prefix="disburse-sentinel-")
        self._process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def start(self) -> SentinelServer:
        directory = Path(self._dir.name)
        config = directory / "sentinel.conf"  # Sentinel rewrites it as it learns
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {directory}",
                    f"logfile {directory / 'sentinel.log'}",
                    f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master_port} {QUORUM}",
                    f"sentinel down-after-milliseconds {SENTINEL_MASTER} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SENTINEL_MASTER} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SENTINEL_MASTER} 1",
                    "",
                ]
            )
        )
        self._process = subprocess.Popen(
            [server_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        _wait(lambda: self._answers(), 10.0, f"sentinel on port {self.port} did not start")
        return self

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"sentinel exited at start (port {self.port})")
        client = self.client()
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None
        self._dir.cleanup()


class ReplicatedRedis(Service):
    """A master, its replica and three Sentinels; :attr:`url` names the Sentinels."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer(replica_of=self.master.port)
        self.sentinels = [SentinelServer(self.master.port) for _ in range(SENTINELS)]

    @property
    def url(self) -> str:
        """kombu's form: every Sentinel, ``;``-separated, each with database 0."""
        return ";".join(f"sentinel://127.0.0.1:{s.port}/0" for s in self.sentinels)

    def start(self) -> ReplicatedRedis:
        try:
            self.master.start()
            self.replica.start()
            for sentinel in self.sentinels:
                sentinel.start()
            _wait(self._watched, 30.0, "the Sentinels did not find the replica and each other")
        except BaseException:
            self.close()
            raise
        return self

    def _watched(self) -> bool:
        """Every Sentinel knows the replica (in sync) and the other Sentinels: a failover
        can be agreed on."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                others = client.execute_command("SENTINEL", "SENTINELS", SENTINEL_MASTER)
            finally:
                client.close()
            if not live_replicas([sentinel.port]) or len(others) < SENTINELS - 1:
                return False
        return True

    @property
    def sentinel_ports(self) -> list[int]:
        return [s.port for s in self.sentinels]

    def kill_master(self) -> int:
        """SIGKILL the current master (no SHUTDOWN, nothing flushed); its port."""
        port = master_port(self.sentinel_ports)
        server = next(s for s in (self.master, self.replica) if s.port == port)
        server.kill()
        return port

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> int:
        return wait_promoted(self.sentinel_ports, old_port, timeout)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        self.replica.close()
        self.master.close()


class ReplicatedPostgres(Service):
    """A primary and its streaming standby (not durable: fsync off, as the test servers).

    :meth:`url` lists the standby first: every connection asks for a writable server
    (worker.db.session), so libpq passes over the standby until it is promoted.
    """

    def __init__(self, *, synchronous: bool = True) -> None:
        self.synchronous = synchronous
        # '*': the first standby connected is the synchronous one.
        settings = ("synchronous_standby_names=*",) if synchronous else ()
        self.primary = PostgresServer(durable=False, settings=settings)
        self.standby = PostgresServer(durable=False, standby_of=self.primary)

    def url(self, database: str = "postgres") -> str:
        hosts = f"127.0.0.1:{self.standby.port},127.0.0.1:{self.primary.port}"
        return f"postgresql://postgres@{hosts}/{database}"

    def start(self) -> ReplicatedPostgres:
        try:
            self.primary.start()
            self.standby.start()
            _wait(self._streaming, 30.0, "the standby did not start streaming")
        except BaseException:
            self.close()
            raise
        return self

    def _streaming(self) -> bool:
        with psycopg.connect(self.primary.url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            ).fetchone()
        return bool(row and row[0])

    def fail_over(self) -> None:
        """The primary crashes (SIGKILL), the standby is promoted; the roles swap, so a
        second call finds no standby (RuntimeError)."""
        if self.standby.pid is None:
            raise RuntimeError("no standby left to promote")
        self.primary.kill()
        self.standby.promote()
        self.primary, self.standby = self.standby, self.primary

    def close(self) -> None:
        self.standby.close()
        self.primary.close()


def master_port(sentinel_ports: list[int]) -> int:
    """The port of the master the Sentinels name now."""
    for port in sentinel_ports:
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=2)
        try:
            _, master = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER
            )
            return int(master)
        except redis.ConnectionError:
            continue
        finally:
            client.close()
    raise RuntimeError("no Sentinel answers")


def live_replicas(sentinel_ports: list[int]) -> int:
    """How many replicas in sync the first Sentinel that answers knows."""
    for port in sentinel_ports:
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=2)
        try:
            replicas = client.execute_command("SENTINEL", "REPLICAS", SENTINEL_MASTER)
        except redis.ConnectionError:
            continue
        finally:
            client.close()
        return sum(1 for r in replicas if _fields(r).get("master-link-status") == "ok")
    raise RuntimeError("no Sentinel answers")


def wait_promoted(sentinel_ports: list[int], old_port: int, timeout: float = 30.0) -> int:
    """Until the Sentinels name a master other than ``old_port``'s, which answers as one;
    its port."""
    found: list[int] = []

    def promoted() -> bool:
        port = master_port(sentinel_ports)
        if port == old_port:
            return False
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            role = client.execute_command("ROLE")
        except redis.ConnectionError:
            return False
        finally:
            client.close()
        found[:] = [port]
        return bool(role) and role[0] == "master"

    _wait(promoted, timeout, f"the Sentinels promoted no replica within {timeout:g} s")
    return found[0]


@dataclass
class RunState:
    """What ``disburse failover`` needs to find the servers of ``up --replicated``: the
    primary's postmaster and the standby's port (0: none left), the Sentinels' ports."""

    postgres_primary_pid: int
    postgres_standby_port: int
    sentinel_ports: list[int]

    @classmethod
    def of(cls, postgres: ReplicatedPostgres, redis_servers: ReplicatedRedis) -> RunState:
        return cls(postgres.primary.pid or 0, postgres.standby.port, redis_servers.sentinel_ports)

    def write(self, directory: Path) -> None:
        (directory / STATE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, directory: Path) -> RunState:
        """Raises FileNotFoundError when ``up --replicated`` does not run there."""
        return cls(**json.loads((directory / STATE_FILE).read_text()))


def fail_over_postgres(directory: Path) -> str:
    """SIGKILL the primary of the ``up --replicated`` whose state is in ``directory``,
    promote its standby; what happened, in a line."""
    state = RunState.read(directory)
    if not state.postgres_standby_port:
        raise RuntimeError("no standby left: a failover was made already; restart `disburse up`")
    started = time.monotonic()
    kill_tree(state.postgres_primary_pid)
    promote(state.postgres_standby_port)
    RunState(0, 0, state.sentinel_ports).write(directory)
    return (
        f"PostgreSQL primary (pid {state.postgres_primary_pid}) killed; the standby on port "
        f"{state.postgres_standby_port} promoted in {time.monotonic() - started:.2f} s"
    )


def fail_over_redis(directory: Path) -> str:
    """SIGKILL the Redis master of the ``up --replicated`` whose state is in ``directory``
    and wait for the Sentinels to promote the replica; what happened, in a line."""
    state = RunState.read(directory)
    if not live_replicas(state.sentinel_ports):
        raise RuntimeError("no replica left: a failover was made already; restart `disburse up`")
    old = master_port(state.sentinel_ports)
    pid = redis_pid(old)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new = wait_promoted(state.sentinel_ports, old)
    return (
        f"Redis master on port {old} (pid {pid}) killed; the Sentinels promoted the replica "
        f"on port {new} after {time.monotonic() - started:.2f} s"
    )


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its children (a postmaster and its backends), as a crash."""
    import psutil

    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGSTOP)  # no new children while they are listed
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for victim in [process, *children]:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            continue


def promote(port: int) -> None:
    """Promote the standby listening on ``port`` (127.0.0.1)."""
    promote_at(f"postgresql://postgres@127.0.0.1:{port}/postgres")


def redis_pid(port: int) -> int:
    """The process id of the Redis server on ``port`` (it says so in INFO)."""
    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def _fields(reply: object) -> dict[str, str]:
    """A Sentinel's flat [name, value, ...] list (or redis-py's dict) as a dict."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply) if isinstance(reply, list | tuple) else []
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _wait(ready: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.1)
