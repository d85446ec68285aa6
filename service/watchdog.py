"""A watchdog over the batch in flight: calls back once when one runs past its timeout.

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


class Watchdog:
    """Watches one run at a time; `on_timeout(item, seconds)` is called once per stuck run."""

    def __init__(self, timeout_s: float, on_timeout: TimeoutCallback) -> None:
        self.timeout_s = timeout_s
        self._on_timeout = on_timeout
        self._lock = threading.Lock()
        self._item: Any = None
        self._since = 0.0
        self._fired = False
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
        """A run of `item` (a batch) starts now."""
        with self._lock:
            self._item, self._since, self._fired = item, time.monotonic(), False

    def end(self) -> None:
        """The run in flight has returned (or raised)."""
        with self._lock:
            self._item = None

    def overdue_s(self) -> float:
        """How long the run in flight has run past the timeout (0 if none has)."""
        with self._lock:
            if self._item is None:
                return 0.0
            return max(0.0, time.monotonic() - self._since - self.timeout_s)

    def _watch(self) -> None:
        while not self._stopped.wait(min(PERIOD_S, self.timeout_s / 4)):
            with self._lock:
                running = time.monotonic() - self._since
                if self._item is None or self._fired or running < self.timeout_s:
                    continue
                self._fired = True
                item = self._item
            self._on_timeout(item, running)
