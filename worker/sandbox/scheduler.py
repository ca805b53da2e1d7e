"""One timer thread with a heap: settlements and webhook (re)deliveries are due at times.

Callbacks run on the timer thread and must be quick (they update state or hand work
to the webhook pool); nothing here ever blocks request handling.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, name: str = "sandbox-scheduler") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False  # after stop(): ignore new work until reopen()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        due = time.monotonic() + max(0.0, delay)
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (due, next(self._seq), callback))
            self._ensure_started()
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _ensure_started(self) -> None:
        # Called with the condition held.
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and forget what was due (a stopped sandbox does nothing more)."""
        with self._cond:
            self._stopping = True
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:
                log.exception("sandbox scheduler callback failed")
