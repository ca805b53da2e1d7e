"""Integration fixtures: a whole local cluster (real Redis and PostgreSQL, sandbox over
HTTP, real ``celery worker`` / ``beat`` processes from the Procfile) per test."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from worker.celery import runtime
from worker.core.states import SETTLED_STATES
from worker.dev.cluster import LocalCluster
from worker.ledger import Ledger
from worker.sandbox import SandboxConfig

ClusterFactory = Callable[..., Any]


@contextmanager
def running_cluster(**kwargs: Any) -> Iterator[LocalCluster]:
    """A started cluster on its own Redis and PostgreSQL (migrated by LocalCluster)."""
    with _running(LocalCluster(**kwargs)) as cluster:
        yield cluster


@contextmanager
def _running(cluster: LocalCluster) -> Iterator[LocalCluster]:
    saved = dict(os.environ)
    try:
        cluster.start()
        os.environ.update(cluster.env())
        runtime.reset()
        cluster.wait_ready()
        yield cluster
    except BaseException:
        print(f"cluster logs: {cluster.log_dir}")
        for log in sorted(cluster.log_dir.glob("*.log")):
            print(
                f"--- {log.name} (tail)\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            )
        raise
    finally:
        cluster.close()
        os.environ.clear()
        os.environ.update(saved)
        runtime.reset()


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., Any]]:
    """``with cluster_factory(env=..., sandbox=SandboxConfig(...)) as cluster: ...``"""
    yield running_cluster


def wait_settled(ledger: Ledger, batch_ids: list[str], timeout: float) -> None:
    """Until every order of the batches is final or in REVIEW (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summaries = [ledger.batch(b) for b in batch_ids]
        if all(s is not None and s.settled for s in summaries):
            return
        time.sleep(0.25)
    counts = {b: (s.counts if s else None) for b, s in zip(batch_ids, summaries, strict=True)}
    pytest.fail(f"batches not settled within {timeout} s: {counts}")


def wait_erased(ledger: Ledger, timeout: float) -> None:
    """Until no order keeps its fields to send (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ledger.pool.connection() as conn:
            (kept,) = conn.execute(
                "SELECT count(*) FROM orders WHERE payload IS NOT NULL"
            ).fetchone() or (0,)
        if kept == 0:
            return
        time.sleep(0.25)
    pytest.fail(f"{kept} orders still keep their fields after {timeout} s")


def fast_sandbox(**knobs: Any) -> SandboxConfig:
    """A sandbox that settles quickly and retries webhooks on a shrunken schedule."""
    defaults: dict[str, Any] = {"settle_delay": (0.1, 0.5), "seed": 11, "webhook_time_scale": 0.02}
    return SandboxConfig(**{**defaults, **knobs})


__all__ = ["SETTLED_STATES", "fast_sandbox", "running_cluster", "wait_erased", "wait_settled"]
