"""The link between HTTP worker processes and the one engine process (`--workers N`).

Each worker tokenises and validates its requests, then sends their token rows over a Unix
socket to the engine process, whose batcher sees the work of every worker together (one
session on the device, batches as large as the device wants). `service.frames` is the wire
format: length-prefixed binary frames, int32 token ids in, float32 vectors out, no pickling.

Crossing the process boundary costs per message, not per request (as vLLM's engine core
does): a worker sends the jobs and cancellations of one event-loop turn in one frame, the
engine admits them under one lock, and answers a worker once per batch with every row of its
jobs that the batch finished.

- `EngineServer` (engine process): one `WorkerLink` per worker connection admits its jobs into
  the batcher, answers them per batch (rows, or errors by name), drops a worker's work when
  its connection closes, and tells every worker the engine's state (queue depth, any problem)
  twice a second.
- `EngineClient` (worker process): what the worker's embedder takes for its batcher, with the
  same methods (`submit`, `cancel`, `refuse_if_full`, drain and health), answered over the
  socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from service.batcher import Batcher, BatchLimits
from service.errors import NotReady, Overloaded, ServiceError
from service.frames import (
    CANCELS,
    ERRORS,
    HELLO,
    RESULTS,
    STATUS,
    STATUS_HEAD,
    SUBMITS,
    decode_cancels,
    decode_errors,
    decode_results,
    decode_submits,
    encode_cancels,
    encode_errors,
    encode_results,
    encode_status,
    encode_submits,
    frame,
    read_frame,
)
from service.jobs import Job

log = logging.getLogger("service.ipc")
STATUS_PERIOD_S = 0.5
STALE_STATUS_S = 5.0  # no word from the engine for this long: the worker is unhealthy


class WorkerLink:
    """The engine's end of one worker's connection, and the sink of that worker's jobs: the
    batcher hands it each batch's finished jobs at once (`service.jobs.Sink`)."""

    def __init__(self, batcher: Batcher, writer: asyncio.StreamWriter) -> None:
        self.loop = asyncio.get_running_loop()
        self._batcher = batcher
        self._writer = writer
        self._jobs: dict[int, Job] = {}  # admitted and not answered, by the worker's tag

    def submit(self, payload: bytes) -> None:
        """Admit the jobs of a SUBMITS frame; answer at once those the batcher refuses."""
        jobs = [
            Job(rows, deadline, request_id, sink=self, tag=tag)
            for tag, deadline, request_id, rows in decode_submits(payload)
        ]
        refused = []
        for job, error in zip(jobs, self._batcher.submit_jobs(jobs), strict=True):
            if error is None:
                self._jobs[job.tag] = job
            else:
                refused.append((job.tag, error))
        if refused:
            self._send(encode_errors(refused))

    def cancel(self, payload: bytes) -> None:
        """Forget the jobs of a CANCELS frame (their rows not computed are dropped)."""
        jobs = [job for tag in decode_cancels(payload) if (job := self._jobs.pop(tag, None))]
        self._batcher.cancel_jobs(jobs)

    def deliver(self, jobs: list[Job]) -> None:
        """One batch's finished jobs of this worker: one RESULTS frame."""
        answered = [job for job in jobs if self._jobs.pop(job.tag, None) is not None]
        if answered:
            self._send(encode_results(answered))

    def fail(self, job: Job, error: Exception) -> None:
        """A job that ended with `error` (deadline, inference failure or timeout, stop)."""
        if self._jobs.pop(job.tag, None) is not None:
            self._send(encode_errors([(job.tag, error)]))

    def close(self) -> None:
        """The worker has gone: drop its work."""
        self._batcher.cancel_jobs(list(self._jobs.values()))
        self._jobs.clear()

    def _send(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)


class EngineServer:
    """The engine process's end: every worker's jobs into one batcher."""

    def __init__(self, batcher: Batcher, hello: dict[str, Any]) -> None:
        self._batcher = batcher
        self._hello = frame(bytes([HELLO]) + json.dumps(hello).encode())
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._status: asyncio.Task[None] | None = None

    async def start(self, path: str) -> None:
        """Listen on the Unix socket `path` and start the status broadcast."""
        self._server = await asyncio.start_unix_server(self._serve, path)
        self._status = asyncio.create_task(self._broadcast())

    async def close(self) -> None:
        """Stop listening and broadcasting; close every worker's connection."""
        if self._status is not None:
            self._status.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = WorkerLink(self._batcher, writer)
        self._writers.add(writer)
        writer.write(self._hello)
        try:
            while True:
                payload = await read_frame(reader)
                if payload[0] == SUBMITS:
                    link.submit(payload)
                elif payload[0] == CANCELS:
                    link.cancel(payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker has gone
        finally:
            self._writers.discard(writer)
            link.close()
            writer.close()

    async def _broadcast(self) -> None:
        while True:
            status = encode_status(self._batcher.queued_rows, self._batcher.problem())
            for writer in list(self._writers):
                if not writer.is_closing():
                    writer.write(status)
            await asyncio.sleep(STATUS_PERIOD_S)


class EngineClient:
    """A worker's batcher: the engine process's, reached over its Unix socket. What a loop
    turn submits and cancels leaves in one frame, at the end of that turn."""

    def __init__(self, path: str, stale_after_s: float = STALE_STATUS_S) -> None:
        self._path = path
        self._stale_after_s = stale_after_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._jobs: dict[int, Job] = {}  # sent (or about to be) and not answered, by tag
        self._unsent: dict[int, Job] = {}  # submitted this loop turn
        self._cancels: list[int] = []  # cancelled this loop turn, after being sent
        self._flush_scheduled = False
        self._tags = itertools.count(1)
        self._admitting = False
        self._queued = 0
        self._problem: str | None = None
        self._heard_at = 0.0
        self._listener: asyncio.Task[None] | None = None
        self.hello: dict[str, Any] = {}
        self.limits = BatchLimits()

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect to the engine and read its HELLO (its limits and device)."""
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_unix_connection(self._path), timeout
        )
        payload = await asyncio.wait_for(read_frame(self._reader), timeout)
        self.hello = json.loads(payload[1:])
        self.limits = BatchLimits(**self.hello["limits"])
        self._heard_at = time.monotonic()
        self._listener = asyncio.create_task(self._listen())

    def start(self) -> None:
        """Admit work."""
        self._admitting = True

    @property
    def queued_rows(self) -> int:
        """Rows queued in the engine, as it last said."""
        return self._queued

    @property
    def unfinished(self) -> int:
        """This worker's jobs submitted and not yet answered."""
        return len(self._jobs)

    def problem(self) -> str | None:
        """Why the engine cannot serve this worker now; None if it can."""
        if self._writer is None or self._writer.is_closing() or self._listener is None:
            return "the engine process is not reachable"
        if self._listener.done():
            return "the connection to the engine process is lost"
        if time.monotonic() - self._heard_at > self._stale_after_s:
            return f"no word from the engine process for over {self._stale_after_s:g} s"
        return self._problem

    def refuse_if_full(self, rows: int) -> None:
        """Raise Overloaded now if the engine's queue, as it last said, has no room for `rows`."""
        if self._queued + rows > self.limits.queue_capacity:
            raise Overloaded(f"queue full ({self._queued} inputs waiting)", retry_after=1.0)

    def submit(
        self, rows: Sequence[Sequence[int]], deadline: float, request_id: str | None = None
    ) -> Job:
        """Send `rows` to the engine (with this loop turn's other jobs); the job's future gets
        their embeddings or their error."""
        if not self._admitting:
            raise NotReady("the service is shutting down")
        problem = self.problem()
        if problem is not None:
            raise NotReady(problem)
        job = Job(rows, deadline, request_id)
        job.tag = next(self._tags)
        self._jobs[job.tag] = self._unsent[job.tag] = job
        self._schedule_flush()
        return job

    def cancel(self, job: Job) -> None:
        """Forget `job` here and in the engine (its client left or its deadline passed)."""
        if self._jobs.pop(job.tag, None) is None:
            return
        if self._unsent.pop(job.tag, None) is None:
            self._cancels.append(job.tag)
            self._schedule_flush()

    def stop_admitting(self) -> None:
        """From now on `submit` raises NotReady; jobs sent go on."""
        self._admitting = False

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every job sent is answered; True if it is."""
        end = time.monotonic() + timeout
        while self._jobs and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return not self._jobs

    def fail_queued(self, error: Exception) -> int:
        """Answer every unanswered job with `error` (and cancel it in the engine)."""
        jobs = list(self._jobs.values())
        for job in jobs:
            self.cancel(job)
            if not job.future.done():
                job.future.set_exception(error)
        return len(jobs)

    def stop(self) -> None:
        """Fail what is unanswered and close the connection."""
        self._admitting = False
        self.fail_queued(NotReady("the service stopped before computing this"))
        self._flush()
        if self._listener is not None:
            self._listener.cancel()
        if self._writer is not None:
            self._writer.close()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send this loop turn's submissions and cancellations, one frame each at most."""
        self._flush_scheduled = False
        data = b""
        if self._unsent:
            data += encode_submits(list(self._unsent.values()))
            self._unsent.clear()
        if self._cancels:
            data += encode_cancels(self._cancels)
            self._cancels.clear()
        if data and self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(data)

    async def _listen(self) -> None:
        assert self._reader is not None
        try:
            while True:
                payload = await read_frame(self._reader)
                self._heard_at = time.monotonic()
                kind = payload[0]
                if kind == RESULTS:
                    for tag, vectors in decode_results(payload):
                        self._settle(tag, vectors, None)
                elif kind == ERRORS:
                    for tag, error in decode_errors(payload):
                        self._settle(tag, None, error)
                elif kind == STATUS:
                    _, self._queued = STATUS_HEAD.unpack_from(payload)
                    self._problem = payload[STATUS_HEAD.size :].decode() or None
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("the engine process closed its connection")
            self.fail_queued(NotReady("the engine process has gone"))

    def _settle(self, tag: int, vectors: np.ndarray | None, error: ServiceError | None) -> None:
        job = self._jobs.pop(tag, None)
        if job is None or job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(vectors)


def hello_of(limits: BatchLimits, **facts: Any) -> dict[str, Any]:
    """What the engine tells each worker on connecting: its batch limits and other facts."""
    return {"limits": asdict(limits), **facts}
