"""A request's rows on their way through the batcher, and how its answer crosses back.

The batcher's worker thread computes rows; each job's answer belongs to the event loop that
submitted it, so answers are handed over with `call_soon_threadsafe`, once per batch and loop:
to the job's future (a request of this process), or to its `Sink` (the engine process's end of
a worker's connection, which answers all of that worker's jobs of a batch in one message).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

LOGGED_REQUEST_IDS = 16  # a failure's log line names at most this many requests


class Sink(Protocol):
    """Where the answers of jobs go instead of a future, on its own event loop."""

    loop: asyncio.AbstractEventLoop

    def deliver(self, jobs: list[Job]) -> None:
        """`jobs` are finished: each has its rows in `out` (called on `loop`)."""
        ...

    def fail(self, job: Job, error: Exception) -> None:
        """`job` ended with `error` (called on `loop`)."""
        ...


class Job:
    """One request's rows on their way through the batcher: `future` gets [rows, dim], or,
    for a job with a `sink`, the sink gets the job (its `tag` says which it is there)."""

    __slots__ = (
        "closed",
        "deadline",
        "enqueued",
        "future",
        "left",
        "loop",
        "out",
        "pending",
        "pending_tokens",
        "request_id",
        "rows",
        "sink",
        "started",
        "tag",
    )

    def __init__(
        self,
        rows: Sequence[Sequence[int]],
        deadline: float,
        request_id: str | None = None,
        sink: Sink | None = None,
        tag: int = 0,
    ) -> None:
        self.rows = rows
        self.deadline = deadline
        self.request_id = request_id
        self.enqueued = time.monotonic()
        self.sink = sink
        self.tag = tag
        self.loop = sink.loop if sink is not None else asyncio.get_running_loop()
        self.future: asyncio.Future[np.ndarray] = (
            None if sink is not None else self.loop.create_future()  # type: ignore[assignment]
        )
        self.out: np.ndarray | None = None
        self.left = len(rows)  # rows not computed yet
        self.pending = len(rows)  # rows not yet taken into a batch
        self.pending_tokens = sum(len(row) for row in rows)
        self.closed = False  # finished, failed or cancelled: no more work for it
        self.started = False


@dataclass(slots=True)
class Row:
    """One input of a job, as queued: row `index` of `job`, `length` tokens long."""

    job: Job
    index: int
    length: int


def request_ids(rows: list[Row]) -> list[str]:
    """The ids of the requests `rows` belong to, for a log line (at most LOGGED_REQUEST_IDS)."""
    ids = dict.fromkeys(row.job.request_id for row in rows if row.job.request_id)
    return [i for i in ids if i is not None][:LOGGED_REQUEST_IDS]


def fill_jobs(batch: list[Row], out: np.ndarray) -> list[Job]:
    """Hand each open job of `batch` its rows of `out` (the batch's embeddings, in batch
    order); the jobs now complete, closed. A job whose rows are all in this batch, in order
    (the common case), takes one slice of `out`, without a copy."""
    done: list[Job] = []
    i = 0
    while i < len(batch):
        job, count = batch[i].job, len(batch[i].job.rows)
        if _whole_job_at(batch, i):
            i += count
            if not job.closed:
                job.out, job.left = out[i - count : i], 0
                job.closed = True
                done.append(job)
            continue
        if _fill_row(batch[i], out[i]):
            done.append(job)
        i += 1
    return done


def _fill_row(row: Row, vector: np.ndarray) -> bool:
    """One row of a job that the batch holds in part; whether that completed the job."""
    job = row.job
    if job.closed:
        return False
    if job.out is None:
        job.out = np.empty((len(job.rows), vector.shape[0]), dtype=vector.dtype)
    job.out[row.index] = vector
    job.left -= 1
    job.closed = job.left == 0
    return job.closed


def _whole_job_at(batch: list[Row], i: int) -> bool:
    """Whether `batch[i:]` starts with every row of that row's job, in order. A job's rows are
    queued together and batches keep queue order, so its first and last rows at the right
    distance mean that every row between is its own."""
    row = batch[i]
    last = i + len(row.job.rows) - 1
    return (
        row.index == 0
        and last < len(batch)
        and batch[last].job is row.job
        and batch[last].index == len(row.job.rows) - 1
    )


def settle(jobs: list[Job]) -> None:
    """Answer finished `jobs` with their rows, on their own loops (any thread): one hand-over
    per loop and sink."""
    groups: dict[tuple[asyncio.AbstractEventLoop, Sink | None], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.loop, job.sink), []).append(job)
    for (loop, sink), group in groups.items():
        _call_soon(loop, _set_results if sink is None else sink.deliver, group)


def settle_error(job: Job, error: Exception) -> None:
    """Answer `job` with `error`, on its own loop (any thread)."""
    _call_soon(job.loop, _set_error if job.sink is None else job.sink.fail, job, error)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the answer
        loop.call_soon_threadsafe(callback, *args)


def _set_results(jobs: list[Job]) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_result(job.out)


def _set_error(job: Job, error: Exception) -> None:
    if not job.future.done():
        job.future.set_exception(error)
