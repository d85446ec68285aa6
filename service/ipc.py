"""The link between HTTP worker processes and the one engine process (`--workers N`).

Each worker tokenises and validates its requests, then sends their token rows over a Unix
socket to the engine process, whose batcher sees the work of every worker together (one
session on the device, batches as large as the device wants). Frames are length-prefixed
binary messages: token ids go as int32, embeddings come back as float32, nothing is pickled.

- `EngineServer` (engine process): admits each worker's jobs into the batcher, answers each
  with its rows or its error, drops a worker's work when its connection closes, and tells
  every worker the engine's state (queue depth, any problem) twice a second.
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
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from service.batcher import Batcher, BatchLimits
from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InferenceTimedOut,
    NotReady,
    Overloaded,
    ServiceError,
)
from service.jobs import Job

log = logging.getLogger("service.ipc")

HELLO, SUBMIT, CANCEL, RESULT, ERROR, STATUS = range(1, 7)
FRAME = struct.Struct("<I")  # payload length
HEAD = struct.Struct("<BQ")  # kind, job id
SUBMIT_HEAD = struct.Struct("<BQdHI")  # kind, job id, deadline, request id length, rows
RESULT_HEAD = struct.Struct("<BQII")  # kind, job id, rows, dim
ERROR_HEAD = struct.Struct("<BQdH")  # kind, job id, retry after, error name length
STATUS_HEAD = struct.Struct("<BQI")  # kind, 0, queued rows; then the problem, if any
STATUS_PERIOD_S = 0.5
STALE_STATUS_S = 5.0  # no word from the engine for this long: the worker is unhealthy
# The errors a job can end with, rebuilt by name on the worker's side.
JOB_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (Overloaded, NotReady, DeadlineExceeded, InferenceFailed, InferenceTimedOut)
}


def frame(payload: bytes) -> bytes:
    """`payload` with its length in front."""
    return FRAME.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's payload (IncompleteReadError when the other side has gone)."""
    (length,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return await reader.readexactly(length)


def encode_submit(
    job_id: int, deadline: float, request_id: str | None, rows: Sequence[Sequence[int]]
) -> bytes:
    """A SUBMIT frame: the job's token rows (time.monotonic() deadline: one clock per host)."""
    rid = (request_id or "").encode()
    lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    head = SUBMIT_HEAD.pack(SUBMIT, job_id, deadline, len(rid), len(rows))
    return frame(head + rid + lengths.tobytes() + ids.tobytes())


def decode_submit(payload: bytes) -> tuple[int, float, str | None, list[np.ndarray]]:
    """Job id, deadline, request id and token rows (views of one int32 array) of a SUBMIT."""
    _, job_id, deadline, rid_length, count = SUBMIT_HEAD.unpack_from(payload)
    at = SUBMIT_HEAD.size
    request_id = payload[at : at + rid_length].decode() or None
    at += rid_length
    lengths = np.frombuffer(payload, dtype=np.int32, count=count, offset=at)
    ids = np.frombuffer(payload, dtype=np.int32, offset=at + 4 * count)
    return job_id, deadline, request_id, np.split(ids, np.cumsum(lengths)[:-1])


def encode_result(job_id: int, vectors: np.ndarray) -> bytes:
    """A RESULT frame: the job's embeddings [rows, dim] as float32."""
    rows, dim = vectors.shape
    head = RESULT_HEAD.pack(RESULT, job_id, rows, dim)
    return frame(head + np.ascontiguousarray(vectors, dtype=np.float32).tobytes())


def decode_result(payload: bytes) -> tuple[int, np.ndarray]:
    """Job id and embeddings of a RESULT."""
    _, job_id, rows, dim = RESULT_HEAD.unpack_from(payload)
    vectors = np.frombuffer(payload, dtype=np.float32, offset=RESULT_HEAD.size)
    return job_id, vectors.reshape(rows, dim)


def encode_error(job_id: int, error: BaseException) -> bytes:
    """An ERROR frame: the error's kind, message and Retry-After (an unknown kind is a failure)."""
    if not isinstance(error, ServiceError) or type(error).__name__ not in JOB_ERRORS:
        error = InferenceFailed("inference failed; see the service log")
    name = type(error).__name__.encode()
    retry_after = float(getattr(error, "retry_after", 0.0))
    head = ERROR_HEAD.pack(ERROR, job_id, retry_after, len(name))
    return frame(head + name + error.message.encode())


def decode_error(payload: bytes) -> tuple[int, ServiceError]:
    """Job id and the rebuilt error of an ERROR."""
    _, job_id, retry_after, name_length = ERROR_HEAD.unpack_from(payload)
    at = ERROR_HEAD.size
    cls = JOB_ERRORS[payload[at : at + name_length].decode()]
    message = payload[at + name_length :].decode()
    if cls in (Overloaded, NotReady):
        return job_id, cls(message, retry_after=retry_after)  # type: ignore[call-arg]
    return job_id, cls(message)


def encode_status(queued: int, problem: str | None) -> bytes:
    """A STATUS frame: rows queued in the engine and what stops it serving, if anything."""
    return frame(STATUS_HEAD.pack(STATUS, 0, queued) + (problem or "").encode())


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
        jobs: dict[int, Job] = {}
        self._writers.add(writer)
        writer.write(self._hello)
        try:
            while True:
                payload = await read_frame(reader)
                if payload[0] == SUBMIT:
                    self._submit(payload, jobs, writer)
                elif payload[0] == CANCEL:
                    job = jobs.pop(HEAD.unpack_from(payload)[1], None)
                    if job is not None:
                        self._batcher.cancel(job)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker has gone
        finally:
            self._writers.discard(writer)
            for job in jobs.values():
                self._batcher.cancel(job)
            writer.close()

    def _submit(self, payload: bytes, jobs: dict[int, Job], writer: asyncio.StreamWriter) -> None:
        job_id, deadline, request_id, rows = decode_submit(payload)
        try:
            job = self._batcher.submit(rows, deadline, request_id=request_id)
        except ServiceError as exc:
            writer.write(encode_error(job_id, exc))
            return
        jobs[job_id] = job

        def answer(future: asyncio.Future[np.ndarray]) -> None:
            if jobs.pop(job_id, None) is None or writer.is_closing():
                return  # cancelled by the worker, or the worker has gone
            if future.cancelled():
                return
            error = future.exception()
            writer.write(
                encode_result(job_id, future.result())
                if error is None
                else encode_error(job_id, error)
            )

        job.future.add_done_callback(answer)

    async def _broadcast(self) -> None:
        while True:
            status = encode_status(self._batcher.queued_rows, self._batcher.problem())
            for writer in list(self._writers):
                if not writer.is_closing():
                    writer.write(status)
            await asyncio.sleep(STATUS_PERIOD_S)


class EngineClient:
    """A worker's batcher: the engine process's, reached over its Unix socket."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._jobs: dict[int, Job] = {}
        self._id_of: dict[Job, int] = {}
        self._ids = itertools.count(1)
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
        """This worker's jobs sent and not yet answered."""
        return len(self._jobs)

    def problem(self) -> str | None:
        """Why the engine cannot serve this worker now; None if it can."""
        if self._writer is None or self._writer.is_closing() or self._listener is None:
            return "the engine process is not reachable"
        if self._listener.done():
            return "the connection to the engine process is lost"
        if time.monotonic() - self._heard_at > STALE_STATUS_S:
            return f"no word from the engine process for over {STALE_STATUS_S:g} s"
        return self._problem

    def refuse_if_full(self, rows: int) -> None:
        """Raise Overloaded now if the engine's queue, as it last said, has no room for `rows`."""
        if self._queued + rows > self.limits.queue_capacity:
            raise Overloaded(f"queue full ({self._queued} inputs waiting)", retry_after=1.0)

    def submit(
        self, rows: Sequence[Sequence[int]], deadline: float, request_id: str | None = None
    ) -> Job:
        """Send `rows` to the engine; the job's future gets their embeddings or their error."""
        if not self._admitting:
            raise NotReady("the service is shutting down")
        problem = self.problem()
        if problem is not None:
            raise NotReady(problem)
        job = Job(rows, deadline, request_id)
        job_id = next(self._ids)
        self._jobs[job_id] = job
        self._id_of[job] = job_id
        job.future.add_done_callback(lambda _: self._forget(job_id))
        assert self._writer is not None
        self._writer.write(encode_submit(job_id, deadline, request_id, rows))
        return job

    def cancel(self, job: Job) -> None:
        """Forget `job` here and in the engine (its client left or its deadline passed)."""
        job_id = self._id_of.get(job)
        if job_id is not None:
            self._forget(job_id)

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
        if self._listener is not None:
            self._listener.cancel()
        if self._writer is not None:
            self._writer.close()

    def _forget(self, job_id: int) -> None:
        """Drop the job; tell the engine unless it has answered already."""
        job = self._jobs.pop(job_id, None)
        if job is not None:
            self._id_of.pop(job, None)
        if job is not None and not job.future.done() and self._writer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(frame(HEAD.pack(CANCEL, job_id)))

    async def _listen(self) -> None:
        assert self._reader is not None
        try:
            while True:
                payload = await read_frame(self._reader)
                self._heard_at = time.monotonic()
                kind = payload[0]
                if kind == RESULT:
                    job_id, vectors = decode_result(payload)
                    self._settle(job_id, vectors, None)
                elif kind == ERROR:
                    job_id, error = decode_error(payload)
                    self._settle(job_id, None, error)
                elif kind == STATUS:
                    _, _, self._queued = STATUS_HEAD.unpack_from(payload)
                    self._problem = payload[STATUS_HEAD.size :].decode() or None
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("the engine process closed its connection")
            self.fail_queued(NotReady("the engine process has gone"))

    def _settle(self, job_id: int, vectors: np.ndarray | None, error: ServiceError | None) -> None:
        job = self._jobs.pop(job_id, None)
        if job is None or job.future.done():
            return
        self._id_of.pop(job, None)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(vectors)


def hello_of(limits: BatchLimits, **facts: Any) -> dict[str, Any]:
    """What the engine tells each worker on connecting: its batch limits and other facts."""
    return {"limits": asdict(limits), **facts}
