"""Overload: requests at about four times the measured capacity, from loopback clients, for a
bounded time. Only 200 and 429 come back; every 429 at once and with Retry-After; every 200
correct; nothing lost; full speed again within seconds of the load stopping."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.conftest import ServiceProcess, report_figure
from tests.service.load.conftest import (
    Closed,
    Outcome,
    closed_loop,
    frozen_heap,
    open_loop,
    request_texts,
)

pytestmark = pytest.mark.slow
PER_REQUEST = 32  # sentences per request: inference, not HTTP, is what saturates
CLIENTS = 8  # closed-loop clients measuring capacity and recovery
OVERLOAD = 4.0  # times the measured capacity
FLOOD_S = 5.0
WINDOW_S = 1.0  # recovery is measured in windows this long
RECOVERED = 0.8  # of the capacity
QUEUE = 512  # inputs: about half a second of work


async def embed(texts: list[str], client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/embed", json={"inputs": texts})


def test_overload_at_four_times_capacity(real_bundle: Path) -> None:
    service = ServiceProcess(
        real_bundle, "--queue-capacity", str(QUEUE), "--max-inputs", str(2 * PER_REQUEST)
    )
    try:
        service.wait_ready()
        with frozen_heap():
            figures = asyncio.run(_overload(service.url))
        still_ready = httpx.get(f"{service.url}/ready").status_code
    finally:
        code, log = service.stop()
    assert code == 0, log
    assert still_ready == 200
    _check(figures)


async def _overload(url: str) -> dict[str, object]:
    requests = request_texts(64, PER_REQUEST)
    sends = [partial(embed, texts) for texts in requests]
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as flood_client,
        httpx.AsyncClient(base_url=url, timeout=60) as probe,
    ):
        reference = [np.array((await send(probe)).json()) for send in sends]
        await closed_loop(probe, sends[0], CLIENTS, 1.0)  # warm
        capacity = await closed_loop(probe, sends[1], CLIENTS, 3.0)
        assert capacity.refused == 0
        rate = OVERLOAD * capacity.rate
        flood = asyncio.create_task(open_loop(flood_client, sends, rate, FLOOD_S))
        await asyncio.sleep(FLOOD_S)
        recovery_s, windows = await _recovery(probe, sends[2], capacity.rate)
        outcomes = await flood
    return {
        "capacity": capacity,
        "rate": rate,
        "outcomes": outcomes,
        "reference": reference,
        "recovery_s": recovery_s,
        "windows": windows,
    }


async def _recovery(
    probe: httpx.AsyncClient, send: object, capacity: float
) -> tuple[float | None, list[float]]:
    """Seconds from the end of the flood to the end of the first window at full speed."""
    stopped = time.monotonic()
    windows: list[float] = []
    while time.monotonic() - stopped < 15:
        window: Closed = await closed_loop(probe, send, CLIENTS, WINDOW_S)  # type: ignore[arg-type]
        windows.append(round(window.rate, 1))
        if window.rate >= RECOVERED * capacity:
            return time.monotonic() - stopped, windows
    return None, windows


def _check(figures: dict[str, object]) -> None:
    capacity: Closed = figures["capacity"]  # type: ignore[assignment]
    outcomes: list[Outcome] = figures["outcomes"]  # type: ignore[assignment]
    reference: list[np.ndarray] = figures["reference"]  # type: ignore[assignment]
    ok = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 429]
    lost = [o for o in outcomes if o.status is None]
    others = [o for o in outcomes if o.status not in (None, 200, 429)]
    refused_p99 = float(np.quantile([o.seconds for o in refused], 0.99)) if refused else 0.0
    ok_p50 = float(np.median([o.seconds for o in ok])) if ok else 0.0
    recovery_s = figures["recovery_s"]
    report_figure(
        "overload",
        f"capacity {capacity.rate:.0f} req/s ({capacity.rate * PER_REQUEST:.0f} sentences/s, "
        f"p50 {capacity.quantile(0.5) * 1000:.0f} ms); offered {figures['rate']:.0f} req/s "
        f"for {FLOOD_S:.0f} s: sent {len(outcomes)}, lost {len(lost)}, 200 {len(ok)}, "
        f"429 {len(refused)}, other {len(others)}; 429 p99 {refused_p99 * 1000:.0f} ms, "
        f"200 p50 {ok_p50 * 1000:.0f} ms",
    )
    report_figure(
        "overload recovery",
        f"{recovery_s:.2f} s to {RECOVERED:.0%} of capacity (req/s per {WINDOW_S:.0f} s "
        f"window: {figures['windows']})"
        if recovery_s is not None
        else f"not within 15 s: {figures['windows']}",
    )
    assert not lost, [o.error for o in lost][:5]
    assert not others, [(o.status, o.body) for o in others][:5]
    assert refused, "four times the capacity should overflow the queue"
    assert ok
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in refused)
    assert refused_p99 < 0.25
    assert refused_p99 < ok_p50
    for o in ok:
        np.testing.assert_allclose(np.array(o.body), reference[o.index % len(reference)], atol=1e-4)
    assert recovery_s is not None
    assert recovery_s < 5.0
