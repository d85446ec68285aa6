"""The link between HTTP worker processes and the one engine process (`--workers N`).

Each worker tokenises and validates its requests, then sends their token rows over a Unix
socket to the engine process, whose batcher sees the work of every worker together (one
session on the device, batches as large as the device wants). Frames are length-prefixed
binary messages: token ids go as int32, embeddings come back as float32, nothing is pickled.

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

HELLO, SUBMITS, CANCELS, RESULTS, ERRORS, STATUS = range(1, 7)
FRAME = struct.Struct("<I")  # payload length
HEAD = struct.Struct("<BI")  # kind, count of jobs (SUBMITS, CANCELS, RESULTS, ERRORS)
RESULTS_HEAD = struct.Struct("<BII")  # kind, count of jobs, dim
ERROR = struct.Struct("<QdHI")  # job tag, retry after, error name length, message length
STATUS_HEAD = struct.Struct("<BI")  # kind, queued rows; then the problem, if any
# One record per job of a SUBMITS frame; then the request ids, row lengths and token ids.
JOB = np.dtype([("tag", "<u8"), ("deadline", "<f8"), ("rows", "<u4"), ("rid", "<u2")])
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


def encode_submits(jobs: Sequence[Job]) -> bytes:
    """A SUBMITS frame: each job's tag, deadline (time.monotonic(): one clock per host),
    request id and token rows."""
    records = np.empty(len(jobs), dtype=JOB)
    rids = [(job.request_id or "").encode() for job in jobs]
    records["tag"] = [job.tag for job in jobs]
    records["deadline"] = [job.deadline for job in jobs]
    records["rows"] = [len(job.rows) for job in jobs]
    records["rid"] = [len(rid) for rid in rids]
    rows = [row for job in jobs for row in job.rows]
    lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    parts = [HEAD.pack(SUBMITS, len(jobs)), records.tobytes(), *rids]
    return frame(b"".join([*parts, lengths.tobytes(), ids.tobytes()]))


def decode_submits(payload: bytes) -> list[tuple[int, float, str | None, list[np.ndarray]]]:
    """Tag, deadline, request id and token rows (views of one int32 array) of each job."""
    _, count = HEAD.unpack_from(payload)
    at = HEAD.size
    records = np.frombuffer(payload, dtype=JOB, count=count, offset=at)
    at += records.nbytes
    rids = []
    for length in records["rid"].tolist():
        rids.append(payload[at : at + length].decode() or None)
        at += length
    total_rows = int(records["rows"].sum())
    lengths = np.frombuffer(payload, dtype=np.int32, count=total_rows, offset=at)
    ids = np.frombuffer(payload, dtype=np.int32, offset=at + 4 * total_rows)
    ends = np.cumsum(lengths).tolist()
    rows = [ids[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    tags, deadlines = records["tag"].tolist(), records["deadline"].tolist()
    bounds = [0, *np.cumsum(records["rows"], dtype=np.int64).tolist()]
    return [(tags[i], deadlines[i], rids[i], rows[bounds[i] : bounds[i + 1]]) for i in range(count)]


def encode_cancels(tags: Sequence[int]) -> bytes:
    """A CANCELS frame: the tags of jobs to forget."""
    return frame(HEAD.pack(CANCELS, len(tags)) + np.array(tags, dtype="<u8").tobytes())


def decode_cancels(payload: bytes) -> list[int]:
    """The tags of a CANCELS frame."""
    _, count = HEAD.unpack_from(payload)
    return np.frombuffer(payload, dtype="<u8", count=count, offset=HEAD.size).tolist()


def encode_results(jobs: Sequence[Job]) -> bytes:
    """A RESULTS frame: each finished job's tag and its embeddings [rows, dim] as float32."""
    dim = jobs[0].out.shape[1]  # type: ignore[union-attr]
    tags = np.array([job.tag for job in jobs], dtype="<u8")
    counts = np.array([len(job.rows) for job in jobs], dtype="<u4")
    vectors = np.concatenate([job.out for job in jobs]).astype(np.float32, copy=False)  # type: ignore[misc]
    head = RESULTS_HEAD.pack(RESULTS, len(jobs), dim)
    return frame(b"".join([head, tags.tobytes(), counts.tobytes(), vectors.tobytes()]))


def decode_results(payload: bytes) -> list[tuple[int, np.ndarray]]:
    """Tag and embeddings of each job of a RESULTS frame."""
    _, count, dim = RESULTS_HEAD.unpack_from(payload)
    at = RESULTS_HEAD.size
    tags = np.frombuffer(payload, dtype="<u8", count=count, offset=at).tolist()
    counts = np.frombuffer(payload, dtype="<u4", count=count, offset=at + 8 * count)
    vectors = np.frombuffer(payload, dtype=np.float32, offset=at + 12 * count).reshape(-1, dim)
    return list(zip(tags, np.split(vectors, np.cumsum(counts)[:-1]), strict=True))


def encode_errors(failed: Sequence[tuple[int, BaseException]]) -> bytes:
    """An ERRORS frame: each job's tag, error kind, message and Retry-After (an error of
    another kind is sent as an inference failure)."""
    parts = [HEAD.pack(ERRORS, len(failed))]
    for tag, error in failed:
        if not isinstance(error, ServiceError) or type(error).__name__ not in JOB_ERRORS:
            error = InferenceFailed("inference failed; see the service log")
        name, message = type(error).__name__.encode(), error.message.encode()
        retry_after = float(getattr(error, "retry_after", 0.0))
        parts += [ERROR.pack(tag, retry_after, len(name), len(message)), name, message]
    return frame(b"".join(parts))


def decode_errors(payload: bytes) -> list[tuple[int, ServiceError]]:
    """Tag and rebuilt error of each job of an ERRORS frame."""
    _, count = HEAD.unpack_from(payload)
    at, failed = HEAD.size, []
    for _ in range(count):
        tag, retry_after, name_length, message_length = ERROR.unpack_from(payload, at)
        at += ERROR.size
        cls = JOB_ERRORS[payload[at : at + name_length].decode()]
        message = payload[at + name_length : at + name_length + message_length].decode()
        at += name_length + message_length
        if cls in (Overloaded, NotReady):
            failed.append((tag, cls(message, retry_after=retry_after)))  # type: ignore[call-arg]
        else:
            failed.append((tag, cls(message)))
    return failed


def encode_status(queued: int, problem: str | None) -> bytes:
    """A STATUS frame: rows queued in the engine and what stops it serving, if anything."""
    return frame(STATUS_HEAD.pack(STATUS, queued) + (problem or "").encode())


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
