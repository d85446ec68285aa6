"""The watchdog over the run in flight: one callback per stuck run, none for quick ones."""

from __future__ import annotations

import threading
import time

from service.watchdog import Watchdog


def test_calls_back_once_for_a_run_past_its_timeout() -> None:
    calls: list[tuple[object, float]] = []
    fired = threading.Event()

    def on_timeout(item: object, seconds: float) -> None:
        calls.append((item, seconds))
        fired.set()

    watchdog = Watchdog(0.2, on_timeout)
    watchdog.start()
    try:
        watchdog.begin("quick")
        watchdog.end()
        watchdog.begin("stuck")
        assert fired.wait(2)
        time.sleep(0.2)  # more periods pass: no second call for the same run
        assert watchdog.overdue_s() > 0
        watchdog.end()
        assert watchdog.overdue_s() == 0
    finally:
        watchdog.stop()
    assert [item for item, _ in calls] == ["stuck"]
    assert calls[0][1] >= 0.2
