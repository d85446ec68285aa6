"""The dynamic batcher: a queue and `runners` worker threads sharing the encoder session.

Requests (jobs) arrive as rows of token ids. When requests come often and overlap (their
average gap is under `max_wait_s`, and they arrive while others are in flight) a runner waits
at most `max_wait_s` after the oldest queued row for more work; at low load, or for one client
sending a request after another, it does not wait, and a batch that then holds all the
admitted work runs on every core (`Backend.embed(..., alone=True)`). Then it takes a batch
holding that oldest row (in arrival order, or from rows of similar length where the encoder
does not group them itself: a recurrent encoder pays for padding in full; see
`service.planner`), within a padded-token budget (longest × rows) and a row cap, runs it while
the other runners run theirs (ONNX Runtime sessions take concurrent runs), and hands each job
its rows; a large job is spread over several batches and reassembled in order. Admission is bounded: past
`queue_capacity` queued rows `submit` raises Overloaded at once. Jobs past their deadline or
cancelled are dropped before inference. An engine failure fails the jobs of that batch only; a
watchdog (`service.watchdog`) fails the jobs of a batch that runs past `inference_timeout_s`.
Shaped after text-embeddings-inference's `queue.rs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InferenceTimedOut,
    NotReady,
    Overloaded,
    ServiceError,
)
from service.jobs import Job, Row, fill_jobs, request_ids, settle, settle_error
from service.planner import Backend, pad_rows, plan_batch, take_in_order
from service.traffic import Arrivals
from service.watchdog import Watchdog

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger("service.batcher")
WINDOW_BATCHES = 4  # batches are planned from the oldest WINDOW_BATCHES × max_batch_rows rows
# Runner threads yield the CPU to the event loop: a few milliseconds of its work (reading,
# admitting, refusing, answering) must not wait behind a batch that keeps every core busy.
RUNNER_NICENESS = 5


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Limits of batch forming and admission."""

    batch_tokens: int = 8192
    max_batch_rows: int = 64
    max_wait_s: float = 0.002
    queue_capacity: int = 4096
    step_cost: float = 4.0  # per-step overhead of the encoder, in rows (see service.planner)
    inference_timeout_s: float = 10.0  # longest one batch may run before its jobs fail
    runners: int = 1  # batches run at once, each by its own worker thread
    group_by_length: bool = True  # plan length groups (CPU); else take rows in arrival order


class Batcher:
    """Queue plus worker thread around one backend session."""

    def __init__(
        self,
        backend: Backend,
        pad_id: int,
        limits: BatchLimits,
        metrics: Metrics | None = None,
    ) -> None:
        self._backend = backend
        self._pad_id = pad_id
        self._limits = limits
        self._metrics = metrics
        self._cond = threading.Condition()
        self._queue: list[Row] = []
        self._queued = 0  # rows admitted and not yet taken into a batch
        self._queued_tokens = 0
        self._unfinished = 0  # jobs admitted and not yet settled
        self._running = 0  # batches in inference now
        self._idle = 0  # runners waiting for work to arrive
        self._gathering = 0  # runners waiting a little for more work (their batch not full)
        self._admitting = False
        self._stopping = False
        self._rows_per_s = 0.0
        self._arrivals = Arrivals(limits.max_wait_s)
        self._threads = [
            threading.Thread(target=self._work, name=f"gensen-batcher-{k}", daemon=True)
            for k in range(limits.runners)
        ]
        self._watchdog = Watchdog(limits.inference_timeout_s, self._time_out)

    # event-loop side

    def start(self) -> None:
        """Start the worker thread and admit work."""
        self._admitting = True
        for thread in self._threads:
            thread.start()
        self._watchdog.start()

    @property
    def limits(self) -> BatchLimits:
        """The limits the batcher was built with."""
        return self._limits

    @property
    def alive(self) -> bool:
        """Whether every worker thread runs."""
        return all(thread.is_alive() for thread in self._threads)

    def problem(self) -> str | None:
        """Why the worker cannot serve now (dead, or stuck past the timeout); None if it can."""
        if not self.alive:
            return "a batcher worker thread is not running"
        overdue = self._watchdog.overdue_s()
        if overdue:
            return f"an inference has run {overdue:.1f} s past its timeout"
        return None

    @property
    def queued_rows(self) -> int:
        """Rows admitted and waiting for a batch."""
        return self._queued

    @property
    def unfinished(self) -> int:
        """Jobs admitted and not yet answered."""
        return self._unfinished

    def submit(
        self, rows: Sequence[Sequence[int]], deadline: float, request_id: str | None = None
    ) -> Job:
        """Queue `rows` (token ids, each non-empty) due by `deadline` (time.monotonic()).

        `request_id` names the request in the log if its batch fails.
        Raises Overloaded when the queue cannot take them, NotReady when not admitting.
        """
        job = Job(rows, deadline, request_id)
        refused = self.submit_jobs([job])[0]
        if refused is not None:
            raise refused
        return job

    def submit_jobs(self, jobs: Sequence[Job]) -> list[ServiceError | None]:
        """Queue `jobs` in order, under one lock and one wake-up (a worker process's jobs of
        one loop turn); for each, None if admitted, else why not (Overloaded, NotReady)."""
        refused: list[ServiceError | None] = []
        with self._cond:
            for job in jobs:
                try:
                    self._admit(job)
                except (Overloaded, NotReady) as exc:
                    refused.append(exc)
                else:
                    refused.append(None)
            self._wake_for(sum(error is None for error in refused))
        self._observe_depth()
        return refused

    def _wake_for(self, admitted: int) -> None:
        """Wake the runners that new work concerns (lock held): idle ones, or one gathering a
        batch that is now full. A runner gathering a batch wakes by its own timer otherwise:
        waking it for every arrival only to wait again cost the engine a thread switch each."""
        if not admitted:
            return
        if self._idle:
            self._cond.notify(min(admitted, self._idle))
        elif self._gathering and self._batch_is_full():
            self._cond.notify()

    def _admit(self, job: Job) -> None:
        """Queue `job` (lock held), or raise why it cannot be."""
        if not self._admitting:
            raise NotReady("the service is shutting down")
        self.refuse_if_full(len(job.rows))
        self._arrivals.note(job.enqueued, in_flight=self._unfinished)
        self._queue.extend(Row(job, i, len(row)) for i, row in enumerate(job.rows))
        self._queued += job.pending
        self._queued_tokens += job.pending_tokens
        self._unfinished += 1

    def refuse_if_full(self, rows: int) -> None:
        """Raise Overloaded now if `rows` more would not fit the queue (read without the lock:
        an early answer that saves tokenising what would be refused; `submit` decides)."""
        if self._queued + rows > self._limits.queue_capacity:
            raise Overloaded(
                f"queue full ({self._queued} inputs waiting)", retry_after=self._retry_after()
            )

    def cancel(self, job: Job) -> None:
        """Forget `job` (its client left or its deadline passed); rows not computed are dropped."""
        self.cancel_jobs([job])

    def cancel_jobs(self, jobs: Sequence[Job]) -> None:
        """`cancel` each of `jobs`, under one lock."""
        with self._cond:
            for job in jobs:
                self._close(job)
        self._observe_depth()

    def stop_admitting(self) -> None:
        """From now on `submit` raises NotReady; admitted work goes on."""
        with self._cond:
            self._admitting = False

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every admitted job is answered; True if it is."""
        end = time.monotonic() + timeout
        while self._unfinished and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return not self._unfinished

    def fail_queued(self, error: Exception) -> int:
        """Answer every job that still has rows waiting with `error` (the batch running now
        finishes); the number of jobs failed."""
        failed = 0
        with self._cond:
            for row in self._queue:
                if not row.job.closed:
                    self._fail(row.job, error)
                    failed += 1
            self._queue.clear()
        self._observe_depth()
        return failed

    def stop(self, timeout: float = 5.0) -> None:
        """Stop admitting, fail what is still queued with NotReady, and end the worker thread."""
        with self._cond:
            self._admitting = False
            self._stopping = True
            self._cond.notify_all()
        self.fail_queued(NotReady("the service stopped before computing this"))
        self._watchdog.stop(timeout)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    # worker side

    def _work(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # not on every platform
            tid = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + RUNNER_NICENESS
            )
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            batch, alone = taken
            try:
                self._run(batch, alone)
            finally:
                with self._cond:
                    self._running -= 1

    def _next_batch(self) -> tuple[list[Row], bool] | None:
        """The next batch, and whether it runs alone (no other batch in inference)."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if not self._queued:
                    self._queue.clear()  # only rows of closed jobs can be left
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                    continue
                wait = self._oldest_enqueued() + self._limits.max_wait_s - time.monotonic()
                if wait > 0 and self._arrivals.more_are_coming() and not self._batch_is_full():
                    self._gathering += 1
                    self._cond.wait(wait)
                    self._gathering -= 1
                    continue
                batch = self._take()
                if batch:
                    self._running += 1
                    return batch, self._holds_everything(batch)

    def _holds_everything(self, batch: list[Row]) -> bool:
        """Whether `batch` runs alone: at low load, no other batch in inference and no other
        job admitted (lock held). Only then may it take every core; under load the runners keep
        the split measured fastest for full batches."""
        if self._running != 1 or self._arrivals.more_are_coming():
            return False
        return self._unfinished == len({id(row.job) for row in batch})

    def _oldest_enqueued(self) -> float:
        for row in self._queue:
            if not row.job.closed:
                return row.job.enqueued
        return time.monotonic()

    def _batch_is_full(self) -> bool:
        limits = self._limits
        return self._queued >= limits.max_batch_rows or self._queued_tokens >= limits.batch_tokens

    def _take(self) -> list[Row]:
        """Remove the next batch from the queue (dropping rows of closed or expired jobs)."""
        now = time.monotonic()
        window = self._limits.max_batch_rows
        if self._limits.group_by_length:
            window *= WINDOW_BATCHES
        live: list[Row] = []
        scanned = 0
        for row in self._queue:
            scanned += 1
            job = row.job
            if not job.closed and job.deadline <= now:
                self._fail(job, DeadlineExceeded("deadline passed while queued"))
            if job.closed:
                continue
            live.append(row)
            if len(live) >= window:
                break
        if not live:
            del self._queue[:scanned]
            self._observe_depth()
            return []
        limits = self._limits
        lengths = [row.length for row in live]
        if limits.group_by_length:
            picked = plan_batch(
                lengths, limits.batch_tokens, limits.max_batch_rows, limits.step_cost
            )
        else:
            picked = take_in_order(lengths, limits.batch_tokens, limits.max_batch_rows)
        chosen = set(picked)
        self._queue[:scanned] = [row for i, row in enumerate(live) if i not in chosen]
        batch = [live[i] for i in picked]
        for row in batch:
            self._mark_taken(row, now)
        return batch

    def _mark_taken(self, row: Row, now: float) -> None:
        job = row.job
        job.pending -= 1
        job.pending_tokens -= row.length
        self._queued -= 1
        self._queued_tokens -= row.length
        if not job.started:
            job.started = True
            if self._metrics is not None:
                self._metrics.queue_wait.observe(now - job.enqueued)

    def _run(self, batch: list[Row], alone: bool) -> None:
        ids, lengths = pad_rows([row.job.rows[row.index] for row in batch], self._pad_id)
        start = time.perf_counter()
        self._watchdog.begin(batch)
        try:
            out = self._backend.embed(ids, lengths, alone)
        except Exception:
            extra = {"rows": len(batch), "request_ids": request_ids(batch)}
            log.exception("encoder failed on a batch", extra=extra)
            with self._cond:
                for row in batch:
                    self._fail(row.job, InferenceFailed("inference failed; see the service log"))
            return
        finally:
            self._watchdog.end()
        seconds = time.perf_counter() - start
        self._record(len(batch), ids.size, int(lengths.sum()), seconds)
        self._deliver(batch, out)

    def _time_out(self, batch: list[Row], running: float) -> None:
        """Watchdog callback: the batch has run past the timeout; answer its jobs now."""
        timeout = self._limits.inference_timeout_s
        error = InferenceTimedOut(f"inference ran past the timeout of {timeout:g} s")
        with self._cond:
            for row in batch:
                self._fail(row.job, error)
        extra = {"rows": len(batch), "seconds": round(running, 3)}
        log.error("inference timed out", extra={**extra, "request_ids": request_ids(batch)})

    def _deliver(self, batch: list[Row], out: np.ndarray) -> None:
        with self._cond:
            done = fill_jobs(batch, out)
            self._unfinished -= len(done)
        settle(done)

    def _record(self, rows: int, padded: int, real: int, seconds: float) -> None:
        rate = rows / max(seconds, 1e-6)
        self._rows_per_s = rate if not self._rows_per_s else 0.8 * self._rows_per_s + 0.2 * rate
        if self._metrics is not None:
            self._metrics.observe_batch(rows, padded, real, seconds)
        self._observe_depth()

    def _observe_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._queued)

    def _retry_after(self) -> float:
        """Seconds until the queue should have room again, from the recent throughput."""
        if not self._rows_per_s:
            return 1.0
        return max(1.0, self._queued / self._rows_per_s)

    def _close(self, job: Job) -> bool:
        """Mark `job` closed and release its queued rows; False if it already was (lock held)."""
        if job.closed:
            return False
        job.closed = True
        self._queued -= job.pending
        self._queued_tokens -= job.pending_tokens
        job.pending = job.pending_tokens = 0
        self._unfinished -= 1
        return True

    def _fail(self, job: Job, error: Exception) -> None:
        if self._close(job):
            settle_error(job, error)
