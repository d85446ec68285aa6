"""The dynamic batcher on its own, with a fake engine (fast): order, budgets, waits, deadlines, overload."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from service.batcher import Batcher, BatchLimits
from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InferenceTimedOut,
    NotReady,
    Overloaded,
)
from tests.service.conftest import PAD, FakeEngine, row_vector

pytestmark = pytest.mark.anyio
FAR = 1e9  # a deadline that never passes


def make_rows(count: int, rng: random.Random, longest: int = 30) -> list[list[int]]:
    return [[rng.randint(1, 999) for _ in range(rng.randint(1, longest))] for _ in range(count)]


def expected(rows: list[list[int]]) -> np.ndarray:
    return np.stack([row_vector(r) for r in rows])


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def started(engine: FakeEngine, **limits: float) -> Batcher:
    batcher = Batcher(engine, PAD, BatchLimits(**limits))  # type: ignore[arg-type]
    batcher.start()
    return batcher


# the worker


async def test_results_match_one_at_a_time_and_keep_order(engine: FakeEngine) -> None:
    rng = random.Random(0)
    batcher = started(engine, batch_tokens=200, max_batch_rows=8, max_wait_s=0.005)
    jobs_rows = [make_rows(rng.randint(1, 20), rng) for _ in range(40)]
    try:
        jobs = [batcher.submit(rows, FAR) for rows in jobs_rows]
        results = await asyncio.gather(*(job.future for job in jobs))
    finally:
        batcher.stop()
    for rows, got in zip(jobs_rows, results, strict=True):
        np.testing.assert_array_equal(got, expected(rows))
    assert len(engine.batches) > 1  # work was batched, and split
    assert len(engine.batches) < sum(len(rows) for rows in jobs_rows)


async def test_budget_and_row_cap_are_respected(engine: FakeEngine) -> None:
    rng = random.Random(2)
    batcher = started(engine, batch_tokens=64, max_batch_rows=5, max_wait_s=0.01)
    try:
        jobs = [batcher.submit(make_rows(7, rng, longest=20), FAR) for _ in range(10)]
        await asyncio.gather(*(job.future for job in jobs))
    finally:
        batcher.stop()
    for rows, longest in engine.batches:
        assert rows <= 5
        assert rows == 1 or rows * longest <= 64


async def test_large_request_is_split_and_reassembled(engine: FakeEngine) -> None:
    rows = make_rows(100, random.Random(3))
    batcher = started(engine, batch_tokens=10_000, max_batch_rows=8, max_wait_s=0.0)
    try:
        got = await batcher.submit(rows, FAR).future
    finally:
        batcher.stop()
    np.testing.assert_array_equal(got, expected(rows))
    assert len(engine.batches) >= 13


async def test_waits_for_more_work_while_another_batch_runs(engine: FakeEngine) -> None:
    batcher = started(engine, max_batch_rows=64, max_wait_s=0.2, runners=2)
    engine.gate.clear()
    try:
        blocker = batcher.submit([[9]], FAR)
        await asyncio.to_thread(engine.entered.wait, 5)  # one runner is busy with the blocker
        start = time.monotonic()
        first = batcher.submit([[1, 2, 3]], FAR)
        await asyncio.sleep(0.02)
        second = batcher.submit([[4, 5]], FAR)
        await asyncio.sleep(0.4)
        engine.gate.set()
        await asyncio.gather(blocker.future, first.future, second.future)
        waited = time.monotonic() - start
    finally:
        batcher.stop()
    # the blocker ran alone; the second runner waited beside it and took both requests
    assert sorted(zip(engine.batches, engine.alone, strict=True)) == [
        ((1, 1), True),
        ((2, 3), False),
    ]
    assert 0.15 <= waited < 2.0


async def test_an_idle_device_does_not_wait(engine: FakeEngine) -> None:
    """Requests came often, but nothing runs: the lone batch runs at once, on every core."""
    batcher = started(engine, max_batch_rows=64, max_wait_s=5.0, runners=2)
    try:
        start = time.monotonic()
        await batcher.submit([[1, 2]], FAR).future
        waited = time.monotonic() - start
    finally:
        batcher.stop()
    assert waited < 1.0
    assert engine.alone == [True]


async def test_a_full_batch_does_not_wait(engine: FakeEngine) -> None:
    batcher = started(engine, max_batch_rows=4, max_wait_s=5.0)
    try:
        start = time.monotonic()
        await batcher.submit([[1]] * 4, FAR).future
    finally:
        batcher.stop()
    assert time.monotonic() - start < 1.0


async def test_expired_request_is_dropped_before_inference(engine: FakeEngine) -> None:
    batcher = started(engine, max_wait_s=0.0)
    engine.gate.clear()
    try:
        blocker = batcher.submit([[7]], FAR)
        await asyncio.to_thread(engine.entered.wait, 5)  # the worker is busy with the blocker
        late = batcher.submit([[8, 8]], time.monotonic() + 0.05)
        await asyncio.sleep(0.1)
        engine.gate.set()
        await blocker.future
        with pytest.raises(DeadlineExceeded):
            await late.future
    finally:
        batcher.stop()
    assert [8, 8] not in engine.seen
    assert batcher.queued_rows == 0
    assert batcher.unfinished == 0


async def test_cancelled_request_is_skipped(engine: FakeEngine) -> None:
    batcher = started(engine, max_wait_s=0.0)
    engine.gate.clear()
    try:
        blocker = batcher.submit([[7]], FAR)
        await asyncio.to_thread(engine.entered.wait, 5)
        gone = batcher.submit([[9, 9, 9]] * 3, FAR)
        batcher.cancel(gone)
        assert batcher.queued_rows == 0
        engine.gate.set()
        await blocker.future
        await batcher.wait_idle(2.0)
    finally:
        batcher.stop()
    assert [9, 9, 9] not in engine.seen
    assert not gone.future.done()  # the caller cancelled it; nobody settles it


async def test_full_queue_refuses_at_once_with_retry_after(engine: FakeEngine) -> None:
    batcher = started(engine, queue_capacity=4, max_wait_s=0.0)
    engine.gate.clear()
    try:
        blocker = batcher.submit([[1]], FAR)
        await asyncio.to_thread(engine.entered.wait, 5)
        queued = batcher.submit([[2]] * 3, FAR)
        with pytest.raises(Overloaded) as refused:
            batcher.submit([[3]] * 2, FAR)
        assert refused.value.retry_after >= 1.0
        engine.gate.set()
        await asyncio.gather(blocker.future, queued.future)
        await batcher.submit([[3]] * 2, FAR).future  # room again
    finally:
        batcher.stop()


async def test_stop_admitting_then_stop(engine: FakeEngine) -> None:
    batcher = started(engine, max_wait_s=0.0)
    engine.gate.clear()
    blocker = batcher.submit([[1]], FAR)
    await asyncio.to_thread(engine.entered.wait, 5)
    queued = batcher.submit([[2]], FAR)
    batcher.stop_admitting()
    with pytest.raises(NotReady):
        batcher.submit([[3]], FAR)
    engine.gate.set()
    assert await batcher.wait_idle(2.0)
    await asyncio.gather(blocker.future, queued.future)  # admitted work was finished
    batcher.stop()
    assert not batcher.alive


async def test_stop_fails_what_is_still_queued(engine: FakeEngine) -> None:
    batcher = started(engine, max_wait_s=0.0)
    engine.gate.clear()
    batcher.submit([[1]], FAR)
    await asyncio.to_thread(engine.entered.wait, 5)
    queued = batcher.submit([[2]], FAR)
    engine.gate.set()  # (the worker may or may not reach `queued` before stop)
    batcher.stop()
    if queued.future.done() and queued.future.exception() is None:
        return
    with pytest.raises(NotReady):
        await queued.future


async def test_fail_queued_answers_what_waits_and_lets_the_running_batch_finish(
    engine: FakeEngine,
) -> None:
    batcher = started(engine, max_batch_rows=1, max_wait_s=0.0)
    try:
        engine.gate.clear()
        running = batcher.submit([[1, 2]], FAR)
        assert await asyncio.to_thread(engine.entered.wait, 5)
        waiting = [batcher.submit([[3]], FAR), batcher.submit([[4], [5]], FAR)]
        assert batcher.fail_queued(NotReady("shutting down")) == 2
        engine.gate.set()
        got = await running.future
        for job in waiting:
            with pytest.raises(NotReady):
                await job.future
    finally:
        batcher.stop()
    np.testing.assert_array_equal(got, expected([[1, 2]]))
    assert batcher.unfinished == 0


async def test_engine_failure_fails_the_batch_and_the_worker_goes_on() -> None:
    engine = FakeEngine(fail=True)
    batcher = started(engine, max_wait_s=0.0)
    try:
        with pytest.raises(InferenceFailed):
            await batcher.submit([[1, 2]], FAR).future
        engine.fail = False
        got = await batcher.submit([[1, 2]], FAR).future
    finally:
        batcher.stop()
    np.testing.assert_array_equal(got, expected([[1, 2]]))
    assert batcher.unfinished == 0


async def test_a_stuck_batch_times_out_and_the_worker_goes_on(engine: FakeEngine) -> None:
    batcher = started(engine, max_wait_s=0.0, inference_timeout_s=0.3)
    try:
        engine.gate.clear()  # the engine hangs
        stuck = batcher.submit([[1, 2], [3]], FAR, request_id="r-1")
        start = time.monotonic()
        with pytest.raises(InferenceTimedOut):
            await stuck.future
        waited = time.monotonic() - start
        assert "past its timeout" in (batcher.problem() or "")
        assert batcher.unfinished == 0  # answered: a drain does not wait for it
        engine.gate.set()  # the run returns at last; its rows are thrown away
        got = await batcher.submit([[4, 5]], FAR).future
        assert batcher.problem() is None
    finally:
        batcher.stop()
    assert 0.25 < waited < 1.0
    np.testing.assert_array_equal(got, expected([[4, 5]]))


async def test_no_wait_at_low_load(engine: FakeEngine) -> None:
    batcher = started(engine, max_batch_rows=64, max_wait_s=0.2)
    try:
        for _ in range(6):  # requests 0.3 s apart: no one to wait for
            await asyncio.sleep(0.3)
            start = time.monotonic()
            await batcher.submit([[1, 2]], FAR).future
            waited = time.monotonic() - start
    finally:
        batcher.stop()
    assert waited < 0.1
