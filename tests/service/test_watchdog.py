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


def test_watches_each_runner_thread_on_its_own() -> None:
    """Two runners: the stuck one is reported, the one that keeps finishing is not."""
    calls: list[object] = []
    fired = threading.Event()

    def on_timeout(item: object, seconds: float) -> None:
        calls.append(item)
        fired.set()

    watchdog = Watchdog(0.2, on_timeout)
    watchdog.start()
    release = threading.Event()

    def stuck_runner() -> None:
        watchdog.begin("stuck")
        release.wait(5)
        watchdog.end()

    def quick_runner() -> None:
        for k in range(20):
            watchdog.begin(f"quick-{k}")
            time.sleep(0.02)
            watchdog.end()

    threads = [threading.Thread(target=stuck_runner), threading.Thread(target=quick_runner)]
    try:
        for thread in threads:
            thread.start()
        assert fired.wait(2)
        assert watchdog.overdue_s() > 0
        release.set()
        for thread in threads:
            thread.join(5)
        assert watchdog.overdue_s() == 0
    finally:
        watchdog.stop()
    assert calls == ["stuck"]
