"""The wire format of the engine link on its own: every frame decodes to what was encoded."""

from __future__ import annotations

import asyncio

import numpy as np

from service import frames
from service.errors import DeadlineExceeded, InferenceFailed, Overloaded
from service.jobs import Job

FAR = 1e12


def test_submits_round_trip() -> None:
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        jobs = [
            _job([[1, 2, 3], [4]], 12.5, "req-1", tag=7, loop=loop),
            _job([[5, 6]], 99.0, None, tag=8, loop=loop),
            _job([[9] * 40, [1], [2, 3]], 1.0, "ünïcode", tag=2**40, loop=loop),
        ]
        decoded = frames.decode_submits(frames.encode_submits(jobs)[frames.FRAME.size :])
    finally:
        loop.close()
    assert [(tag, deadline, rid) for tag, deadline, rid, _ in decoded] == [
        (7, 12.5, "req-1"),
        (8, 99.0, None),
        (2**40, 1.0, "ünïcode"),
    ]
    assert [[row.tolist() for row in rows] for *_, rows in decoded] == [j.rows for j in jobs]


def test_results_errors_and_cancels_round_trip() -> None:
    loop = asyncio.new_event_loop()
    try:
        first, second = _job([[1], [2]], FAR, None, 3, loop), _job([[3]], FAR, None, 4, loop)
    finally:
        loop.close()
    first.out = np.arange(8, dtype=np.float32).reshape(2, 4)
    second.out = np.ones((1, 4), dtype=np.float32)
    results = frames.decode_results(frames.encode_results([first, second])[frames.FRAME.size :])
    assert [tag for tag, _ in results] == [3, 4]
    np.testing.assert_array_equal(results[0][1], first.out)
    np.testing.assert_array_equal(results[1][1], second.out)
    sent = [
        (1, Overloaded("queue full", retry_after=3.0)),
        (2, DeadlineExceeded("late")),
        (3, RuntimeError("a bug")),  # an unexpected error goes as an inference failure
    ]
    errors = frames.decode_errors(frames.encode_errors(sent)[frames.FRAME.size :])
    assert [(tag, type(e), e.message) for tag, e in errors] == [
        (1, Overloaded, "queue full"),
        (2, DeadlineExceeded, "late"),
        (3, InferenceFailed, "inference failed; see the service log"),
    ]
    assert errors[0][1].retry_after == 3.0  # type: ignore[attr-defined]
    assert frames.decode_cancels(frames.encode_cancels([5, 2**50])[frames.FRAME.size :]) == [
        5,
        2**50,
    ]


def _job(
    rows: list[list[int]],
    deadline: float,
    rid: str | None,
    tag: int,
    loop: asyncio.AbstractEventLoop,
) -> Job:
    class _LoopOnly:
        def __init__(self) -> None:
            self.loop = loop

    job = Job(rows, deadline, rid, sink=_LoopOnly(), tag=tag)  # type: ignore[arg-type]
    return job
