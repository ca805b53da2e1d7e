"""The raw loop of ``bench.slow_provider``: the client alone, paced at a limit.

Runs in a process of its own (spawned), so that its threads compete with nothing of
the bench process, where the sandbox serves: ``in_flight`` threads share one
``VexoraClient`` (its connection pool as large) and start a POST every 1 / limit
seconds, as soon after as a thread is free: the most that client can send at that
limit with that many requests in flight.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event


def run(
    base_url: str,
    merchant_no: str,
    secret: str,
    payloads: list[dict[str, str]],
    in_flight: int,
    limit: int,
    cap: float,
    ready: Event,
    start: Event,
    out: Any,
) -> None:
    """One process: ``in_flight`` threads share one client and start a POST every 1 / limit
    seconds (or as soon after as a thread is free), until done or ``cap`` seconds."""
    import threading

    import psutil

    from worker.core.exceptions import DisburseError
    from worker.core.settings import Settings
    from worker.provider.vexora import VexoraClient

    client = VexoraClient(
        base_url, merchant_no, secret, timeouts=Settings().timeouts, pool_size=in_flight
    )
    lock = threading.Lock()
    counts = {"next": 0, "sent": 0, "failures": 0}
    slot = [0.0]  # when the next POST may start: 1 / limit after the one before, never sooner

    def work(began: float) -> None:
        while True:
            with lock:
                index = counts["next"]
                counts["next"] += 1
                # A late thread slips the schedule rather than catching up in a burst.
                due = slot[0] = max(slot[0] or began, time.monotonic())
                slot[0] += 1 / limit
            if index >= len(payloads) or due > began + cap:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                client.submit(payloads[index], uuid.uuid4().hex)
            except DisburseError:
                with lock:
                    counts["failures"] += 1
            with lock:
                counts["sent"] += 1

    with contextlib.suppress(DisburseError):
        client.submit(payloads[0], uuid.uuid4().hex)  # import and connect before the start
    ready.set()
    start.wait()
    cpu = time.process_time()
    began = time.monotonic()
    threads = [threading.Thread(target=work, args=(began,)) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(
        {
            "seconds": time.monotonic() - began,
            "cpu": time.process_time() - cpu,
            "rss": psutil.Process().memory_info().rss,
            "failures": counts["failures"],
            "sent": counts["sent"],
        }
    )
