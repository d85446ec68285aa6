"""The link between HTTP workers and the engine process on its own: frames, and a real
EngineServer and EngineClient over a Unix socket around a real batcher (with a fake engine).

What can go wrong between a worker and the engine comes back to the worker as the error the
HTTP layer answers: a deadline, overload, an inference failure or timeout; a client that
leaves and a worker that dies free their rows in the engine; an engine gone quiet makes the
worker unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from service import frames, ipc
from service.batcher import Batcher, BatchLimits
from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InferenceTimedOut,
    NotReady,
    Overloaded,
    ServiceError,
)
from service.ipc import EngineClient, EngineServer, hello_of
from service.jobs import Job
from tests.service.conftest import PAD, FakeEngine, row_vector

pytestmark = pytest.mark.anyio
FAR = 1e12  # a deadline that never passes


class CountingBatcher(Batcher):
    """The real batcher, counting how the engine side hands it work."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.submissions: list[int] = []  # jobs per submit_jobs call

    def submit_jobs(self, jobs: list[Job]) -> list[ServiceError | None]:  # type: ignore[override]
        self.submissions.append(len(jobs))
        return super().submit_jobs(jobs)


class Link:
    """An engine server and a worker's client on a Unix socket in `folder`."""

    def __init__(self, engine: FakeEngine, folder: Path, **limits: float) -> None:
        self.engine = engine
        self.batcher = CountingBatcher(engine, PAD, BatchLimits(**limits))  # type: ignore[arg-type]
        self.server = EngineServer(self.batcher, hello_of(self.batcher.limits, engine={}))
        self.path = str(folder / "engine.sock")
        self.client = EngineClient(self.path)

    async def __aenter__(self) -> Link:
        self.batcher.start()
        await self.server.start(self.path)
        await self.client.connect()
        self.client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.stop()
        await self.server.close()
        self.batcher.stop()


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[Link]:
    async with Link(FakeEngine(), tmp_path, max_wait_s=0.0, runners=1) as started:
        yield started


async def until(condition: object, timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (the engine works on its own threads)."""
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


# per loop turn, per batch


async def test_a_loop_turns_jobs_go_in_one_frame_and_come_back_right(link: Link) -> None:
    rows = [[[i, i + 1]] for i in range(1, 30)]
    jobs = [link.client.submit(r, FAR) for r in rows]  # one loop turn
    results = await asyncio.gather(*(job.future for job in jobs))
    assert link.batcher.submissions == [len(rows)]  # one frame, one admission
    for r, got in zip(rows, results, strict=True):
        np.testing.assert_array_equal(got, np.stack([row_vector(x) for x in r]))


async def test_the_engine_answers_a_worker_once_per_batch(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with Link(engine, tmp_path, max_wait_s=0.0, runners=1) as link:
        answers: list[int] = []
        decode = ipc.decode_results
        ipc.decode_results = lambda payload: answers.append(1) or decode(payload)  # type: ignore[assignment]
        try:
            blocker = link.client.submit([[1]], FAR)
            await asyncio.to_thread(engine.entered.wait, 5)
            queued = [link.client.submit([[2, i]], FAR) for i in range(20)]
            await until(lambda: link.batcher.queued_rows == 20)
            engine.gate.set()
            await asyncio.gather(blocker.future, *(job.future for job in queued))
        finally:
            ipc.decode_results = decode  # type: ignore[assignment]
    assert len(engine.batches) == 2
    assert len(answers) == 2  # one RESULTS frame per batch, not one per request


# what goes wrong between a worker and the engine


async def test_a_client_that_leaves_has_its_rows_dropped_in_the_engine(link: Link) -> None:
    link.engine.gate.clear()
    blocker = link.client.submit([[1]], FAR)
    await asyncio.to_thread(link.engine.entered.wait, 5)
    leaving = link.client.submit([[7, 7, 7]], FAR)
    await until(lambda: link.batcher.queued_rows == 1)
    link.client.cancel(leaving)  # what the HTTP layer does when the client disconnects
    await until(lambda: link.batcher.queued_rows == 0)
    link.engine.gate.set()
    await blocker.future
    await until(lambda: link.batcher.unfinished == 0)
    assert [7, 7, 7] not in link.engine.seen
    assert link.client.unfinished == 0


async def test_a_job_cancelled_before_its_frame_left_is_never_sent(link: Link) -> None:
    job = link.client.submit([[4, 4]], FAR)
    link.client.cancel(job)  # the same loop turn
    kept = link.client.submit([[5]], FAR)
    await kept.future
    assert link.batcher.submissions == [1]
    assert [4, 4] not in link.engine.seen


async def test_a_worker_that_dies_has_its_queued_work_dropped(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with Link(engine, tmp_path, max_wait_s=0.0, runners=1) as link:
        other = EngineClient(link.path)  # a second worker, which dies with jobs queued
        await other.connect()
        other.start()
        blocker = link.client.submit([[1]], FAR)
        await asyncio.to_thread(engine.entered.wait, 5)
        orphans = [other.submit([[8, i]], FAR) for i in range(5)]
        await until(lambda: link.batcher.queued_rows == 5)
        other._writer.transport.abort()  # type: ignore[union-attr]  # no goodbye: killed
        await until(lambda: link.batcher.queued_rows == 0)
        await asyncio.gather(*(job.future for job in orphans), return_exceptions=True)
        other.stop()
        engine.gate.set()
        await blocker.future
        await until(lambda: link.batcher.unfinished == 0)
    assert not any(row[0] == 8 for row in engine.seen)


@pytest.mark.parametrize(
    ("limits", "error", "retry_after"),
    [
        ({"queue_capacity": 3}, Overloaded, True),
        ({"inference_timeout_s": 0.3}, InferenceTimedOut, False),
    ],
)
async def test_overload_and_timeouts_reach_the_worker_as_their_errors(
    tmp_path: Path, limits: dict, error: type[ServiceError], retry_after: bool
) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with Link(engine, tmp_path, max_wait_s=0.0, runners=1, **limits) as link:
        first = link.client.submit([[1], [2]], FAR)
        await asyncio.to_thread(engine.entered.wait, 5)
        second = link.client.submit([[3], [4]], FAR)  # queued
        third = link.client.submit([[5], [6]], FAR)  # past a capacity of 3
        failed = first if error is InferenceTimedOut else third
        with pytest.raises(error) as raised:
            await asyncio.wait_for(failed.future, 5)
        engine.gate.set()
        await asyncio.gather(first.future, second.future, third.future, return_exceptions=True)
    if retry_after:
        assert raised.value.retry_after >= 1.0  # type: ignore[attr-defined]


async def test_a_deadline_passed_in_the_engine_is_a_deadline_error(link: Link) -> None:
    link.engine.gate.clear()
    blocker = link.client.submit([[1]], FAR)
    await asyncio.to_thread(link.engine.entered.wait, 5)
    late = link.client.submit([[2, 2]], time.monotonic() + 0.1)
    await asyncio.sleep(0.3)
    link.engine.gate.set()  # the runner then finds it expired
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(late.future, 5)
    await blocker.future
    assert [2, 2] not in link.engine.seen


async def test_an_inference_failure_reaches_the_worker(tmp_path: Path) -> None:
    async with Link(FakeEngine(fail=True), tmp_path, max_wait_s=0.0, runners=1) as link:
        job = link.client.submit([[1, 2]], FAR)
        with pytest.raises(InferenceFailed):
            await asyncio.wait_for(job.future, 5)


async def test_refuse_if_full_follows_the_engines_queue(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with Link(engine, tmp_path, max_wait_s=0.0, runners=1, queue_capacity=8) as link:
        blocker = link.client.submit([[1]], FAR)
        await asyncio.to_thread(engine.entered.wait, 5)
        queued = link.client.submit([[2]] * 6, FAR)
        await until(lambda: link.client.queued_rows == 6, timeout=5)  # the engine's status
        with pytest.raises(Overloaded):
            link.client.refuse_if_full(3)
        link.client.refuse_if_full(2)  # still fits
        engine.gate.set()
        await asyncio.gather(blocker.future, queued.future)


async def test_an_engine_gone_quiet_makes_the_worker_unhealthy(tmp_path: Path) -> None:
    path = str(tmp_path / "quiet.sock")
    hello = frames.frame(bytes([frames.HELLO]) + b'{"limits": {}, "engine": {}}')

    async def quiet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(hello)  # then nothing, ever: a stuck engine process

    server = await asyncio.start_unix_server(quiet, path)
    client = EngineClient(path, stale_after_s=0.3)
    try:
        await client.connect()
        client.start()
        assert client.problem() is None
        await asyncio.sleep(0.5)
        assert "no word from the engine process" in (client.problem() or "")
        with pytest.raises(NotReady):
            client.submit([[1]], FAR)
    finally:
        client.stop()
        server.close()


async def test_an_engine_that_goes_away_fails_what_was_sent(link: Link) -> None:
    link.engine.gate.clear()
    blocker = link.client.submit([[1]], FAR)
    await asyncio.to_thread(link.engine.entered.wait, 5)
    waiting = link.client.submit([[2]], FAR)
    await until(lambda: link.batcher.queued_rows == 1)
    await link.server.close()  # the engine's end closes
    with pytest.raises(NotReady):
        await asyncio.wait_for(waiting.future, 5)
    assert link.client.problem() is not None
    link.engine.gate.set()
    with contextlib.suppress(ServiceError):
        await blocker.future
