"""The wire format between HTTP workers and the engine process (`service.ipc`).

Frames are length-prefixed binary messages; nothing is pickled. Token ids go as int32 and
embeddings come back as float32. A frame carries many jobs: the jobs (or cancellations) of
one event-loop turn of a worker, or every job of a worker that one batch finished.

| frame | payload |
|---|---|
| HELLO (engine) | JSON: the engine's batch limits and facts |
| SUBMITS (worker) | a record per job (tag, deadline, rows, request id length), request ids, row lengths, token ids |
| CANCELS (worker) | job tags |
| RESULTS (engine) | job tags, rows per job, embeddings |
| ERRORS (engine) | per job: tag, Retry-After, error name and message |
| STATUS (engine) | rows queued in the engine, and what stops it serving |
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Sequence

import numpy as np

from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InferenceTimedOut,
    NotReady,
    Overloaded,
    ServiceError,
)
from service.jobs import Job

HELLO, SUBMITS, CANCELS, RESULTS, ERRORS, STATUS = range(1, 7)
FRAME = struct.Struct("<I")  # payload length
HEAD = struct.Struct("<BI")  # kind, count of jobs (SUBMITS, CANCELS, RESULTS, ERRORS)
RESULTS_HEAD = struct.Struct("<BII")  # kind, count of jobs, dim
ERROR = struct.Struct("<QdHI")  # job tag, retry after, error name length, message length
STATUS_HEAD = struct.Struct("<BI")  # kind, queued rows; then the problem, if any
# One record per job of a SUBMITS frame; then the request ids, row lengths and token ids.
JOB = np.dtype([("tag", "<u8"), ("deadline", "<f8"), ("rows", "<u4"), ("rid", "<u2")])
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
