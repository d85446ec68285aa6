"""SIGTERM under load: readiness turns 503 at once, every admitted request is answered 200 (or,
past the drain bound, 503), nothing is cut off mid-answer, and the process exits within the
drain bound.

A client cannot see admission: a request it sent just before the signal may reach the service
after it, and is then refused with 503 like any new work. So the test counts what the service
had admitted and not yet answered when it began to drain (its "draining" log line), and checks
that at least that many 200 answers came after the signal, and that no 503 says admitted work
was dropped. The clients keep sending until they are refused, some on new connections, so any
connection closed or reset under a request (rather than answered 503) counts as cut off.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.server import exit_bound_s
from service.settings import Settings
from tests.service.conftest import ServiceProcess, report_figure
from tests.service.load.conftest import request_texts

pytestmark = pytest.mark.slow
CLIENTS = 32
PER_REQUEST = 16  # 512 inputs in flight: about half a second of work queued at any time
LOAD_BEFORE_S = 2.0
BACKLOG_REQUESTS = 24  # of 256 inputs: seconds of single-row batches even on two runners
EXIT_MARGIN_S = 3.0  # process start-up of the interpreter's exit, logs, sockets


@dataclass
class Run:
    """What the clients and the readiness poller saw around the signal (times from SIGTERM)."""

    before: list[int] = field(default_factory=list)  # statuses of requests sent before it
    in_flight: list[int] = field(default_factory=list)  # ... of those answered after it
    after: list[int] = field(default_factory=list)  # statuses of requests sent after it
    errors: list[str] = field(default_factory=list)  # requests cut off after being sent
    refusals: list[str] = field(default_factory=list)  # messages of the 503 answers
    answered_after: int = 0  # 200 answers received after the signal
    refused_connections: int = 0  # new connections refused once the listener closed
    wrong: int = 0  # 200 answers that do not match the reference
    not_ready_at: float | None = None
    last_answer_at: float = 0.0
    exited_at: float = 0.0


def test_sigterm_under_load(real_bundle: Path) -> None:
    drain_s = 15.0
    bound = exit_bound_s(Settings(drain_timeout_s=drain_s))
    service = ServiceProcess(real_bundle, "--drain-timeout-s", str(drain_s), "--max-inputs", "32")
    try:
        service.wait_ready()
        run = asyncio.run(_terminate_under_load(service))
        code, log = service.stop_when_exited(timeout=bound + 10)
    finally:
        service.stop()
    admitted = _unfinished_at_drain(log)
    report_figure(
        "SIGTERM under load",
        f"{admitted} requests admitted and unanswered at the drain, {run.answered_after} answered "
        f"200 after the signal; {len(run.in_flight)} in flight at it answered "
        f"{sorted(set(run.in_flight))}; {len(run.refusals)} refused with 503, "
        f"{run.refused_connections} connections refused, {len(run.errors)} cut off; "
        f"not ready after {run.not_ready_at:.3f} s, last answer at {run.last_answer_at:.2f} s, "
        f"exit at {run.exited_at:.2f} s (bound {bound:.0f} s)",
    )
    assert code == 0, log
    assert admitted > 0
    assert run.answered_after >= admitted  # every admitted request completes
    assert set(run.before + run.after) <= {200, 503}
    assert all("not ready" in m or "shutting down" in m for m in run.refusals), run.refusals
    assert not any("comput" in m for m in run.refusals), run.refusals  # none dropped
    assert not run.errors, run.errors[:5]
    assert run.wrong == 0
    assert run.not_ready_at is not None
    assert run.not_ready_at < run.last_answer_at  # readiness flips before the drain ends
    assert run.exited_at < bound + EXIT_MARGIN_S
    assert log.index('"message":"draining"') < log.index('"message":"Shutting down"')


def test_the_process_exits_within_the_drain_bound(real_bundle: Path) -> None:
    """Far more work admitted than the drain bound allows: the process still exits in time, and
    what it could not compute is answered 503, not cut off."""
    drain_s = 1.0
    bound = exit_bound_s(Settings(drain_timeout_s=drain_s))
    service = ServiceProcess(
        real_bundle,
        *("--drain-timeout-s", str(drain_s), "--max-batch-rows", "1", "--max-wait-ms", "0"),
        *("--max-inputs", "256", "--queue-capacity", "8192"),
    )
    try:
        service.wait_ready()
        statuses, exited_at = asyncio.run(_terminate_with_backlog(service))
        code, log = service.stop_when_exited(timeout=30)
    finally:
        service.stop()
    report_figure(
        "SIGTERM past the drain bound",
        f"exit {exited_at:.2f} s after the signal (bound {bound:.0f} s); "
        f"answers {sorted(statuses)}",
    )
    assert code == 0, log
    assert exited_at < bound + EXIT_MARGIN_S
    assert set(statuses) <= {200, 503}
    assert 503 in statuses
    assert '"message":"drain timed out"' in log


async def _terminate_under_load(service: ServiceProcess) -> Run:
    requests = request_texts(CLIENTS, PER_REQUEST)
    run = Run()
    signalled = asyncio.Event()
    start = 0.0
    limits = httpx.Limits(max_connections=CLIENTS + 4)
    async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as client:
        reference = [np.array((await _embed(client, texts)).json()) for texts in requests]

        async def load(i: int) -> None:
            while True:
                before = signalled.is_set()
                try:
                    response = await _embed(client, requests[i])
                except httpx.ConnectError:
                    run.refused_connections += 1
                    return
                except httpx.HTTPError as exc:
                    run.errors.append(
                        f"{type(exc).__name__} (sent {'after' if before else 'before'})"
                    )
                    return
                (run.after if before else run.before).append(response.status_code)
                if not before and signalled.is_set():
                    run.in_flight.append(response.status_code)
                if response.status_code == 503:
                    run.refusals.append(response.json()["error"])
                if response.status_code == 200 and signalled.is_set():
                    run.answered_after += 1
                if response.status_code == 200:
                    run.last_answer_at = time.monotonic() - start
                    if not np.allclose(response.json(), reference[i], atol=1e-4):
                        run.wrong += 1
                else:
                    return  # refused: a load balancer would send it elsewhere now

        async def poll_ready() -> None:
            async with httpx.AsyncClient(base_url=service.url, timeout=5) as poller:
                await signalled.wait()
                while run.not_ready_at is None:
                    try:
                        if (await poller.get("/ready")).status_code == 503:
                            run.not_ready_at = time.monotonic() - start
                    except httpx.HTTPError:
                        return
                    await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(load(i)) for i in range(CLIENTS)]
        poller = asyncio.create_task(poll_ready())
        await asyncio.sleep(LOAD_BEFORE_S)
        start = time.monotonic()
        service.terminate()
        signalled.set()
        await asyncio.gather(*tasks, poller)
        await asyncio.to_thread(service.proc.wait, 60)
        run.exited_at = time.monotonic() - start
    return run


def _unfinished_at_drain(log: str) -> int:
    """Requests admitted and not yet answered when the drain began, from the service's log."""
    for line in log.splitlines():
        if '"message":"draining"' in line:
            return int(json.loads(line)["unfinished"])
    raise AssertionError("no draining line in the log")


async def _terminate_with_backlog(service: ServiceProcess) -> tuple[list[int], float]:
    texts = request_texts(1, 256)[0]
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
        requests = [asyncio.create_task(_embed(client, texts)) for _ in range(BACKLOG_REQUESTS)]
        await asyncio.sleep(1.0)  # 6144 inputs admitted, one per batch: far past the bound
        start = time.monotonic()
        service.terminate()
        answers = await asyncio.gather(*requests)
        await asyncio.to_thread(service.proc.wait, 60)
        exited_at = time.monotonic() - start
    return [answer.status_code for answer in answers], exited_at


async def _embed(client: httpx.AsyncClient, texts: list[str]) -> httpx.Response:
    return await client.post("/embed", json={"inputs": texts})
