"""A watchdog over the batches in flight: calls back once for each that runs past its timeout.

ONNX Runtime cannot interrupt a running kernel (the encoder's GRU is one), so the watchdog does
not try: the batcher answers the batch's requests at once when called back, and reports
itself unhealthy (`/health`, `/ready`) for as long as the run stays stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

PERIOD_S = 0.5  # the watchdog looks at the run in flight at least this often

TimeoutCallback = Callable[[Any, float], None]


class _Run:
    __slots__ = ("fired", "item", "since")

    def __init__(self, item: Any) -> None:
        self.item, self.since, self.fired = item, time.monotonic(), False


class Watchdog:
    """Watches the runs in flight (one per runner thread); `on_timeout(item, seconds)` is
    called once per stuck run."""

    def __init__(self, timeout_s: float, on_timeout: TimeoutCallback) -> None:
        self.timeout_s = timeout_s
        self._on_timeout = on_timeout
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}  # by runner thread id
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gensen-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and end the thread."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def begin(self, item: Any) -> None:
        """A run of `item` (a batch) starts now on the calling thread."""
        with self._lock:
            self._runs[threading.get_ident()] = _Run(item)

    def end(self) -> None:
        """The calling thread's run has returned (or raised)."""
        with self._lock:
            self._runs.pop(threading.get_ident(), None)

    def overdue_s(self) -> float:
        """How long the oldest run in flight has run past the timeout (0 if none has)."""
        with self._lock:
            if not self._runs:
                return 0.0
            oldest = min(run.since for run in self._runs.values())
        return max(0.0, time.monotonic() - oldest - self.timeout_s)

    def _watch(self) -> None:
        while not self._stopped.wait(min(PERIOD_S, self.timeout_s / 4)):
            now = time.monotonic()
            with self._lock:
                stuck = [
                    r
                    for r in self._runs.values()
                    if not r.fired and now - r.since >= self.timeout_s
                ]
                for run in stuck:
                    run.fired = True
            for run in stuck:
                self._on_timeout(run.item, now - run.since)
