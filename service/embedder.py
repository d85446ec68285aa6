"""The embedding service object: checks request limits, tokenises, queues, and waits for the rows.

Routes call `Embedder.embed`; it hands the batcher only inputs known to be valid (non-empty
token rows within the limits) and gives back raw (unnormalised) vectors in input order, and
each input's window vectors with their character spans when asked.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.batcher import Batcher
from service.errors import (
    ClientGone,
    DeadlineExceeded,
    InputTooLong,
    InvalidInput,
    NotReady,
    TooManyInputs,
)
from service.jobs import Job
from service.logs import current_request_id
from service.schemas import CONTROL_CLASS
from service.tokenization import Encoded, TextTokenizer
from service.windows import WindowVector, default_overlap, split, window_vectors

Disconnected = Callable[[], Awaitable[Any]]
Project = Callable[[np.ndarray], np.ndarray]  # pooled features [rows, F] -> vectors [rows, dim]
WATCH_AFTER_S = 0.1  # a request still waiting after this long starts watching its connection
# Control characters (Unicode category Cc) other than tab, line feed, vertical tab, form feed
# and carriage return, which real text holds: an input with one is refused, not guessed at.
CONTROL_CHARS = re.compile(f"[{CONTROL_CLASS}]")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Limits of one request."""

    max_inputs: int = 512
    max_input_chars: int = 20_000
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Raw embeddings [inputs, dim] in input order, and what was embedded to make them."""

    vectors: np.ndarray
    tokens: int  # tokens of the inputs that were embedded (after truncation, if asked)
    windows: int = 0  # encoder rows: one per input, more for inputs past the model's limit
    truncated: int = 0  # inputs cut at the model's limit (only when the request asked)
    by_window: list[list[WindowVector]] | None = None  # each input's windows, when asked


class Embedder:
    """Texts in, embeddings out, through the tokenizer and the batcher."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        batcher: Batcher,
        limits: RequestLimits,
        dim: int,
        project: Project | None = None,
        context_mark: int | None = None,
    ) -> None:
        """`dim`: the vectors' width (the batcher's rows may carry pooled features after it);
        `project`: maps the max-pooled features of a long text's windows to its vector (None:
        the bundle has no features, and windows are averaged); `context_mark`: the encoder's
        (`Bundle.context_mark`), so that each window gives only the states it owns."""
        self._tokenizer = tokenizer
        self._batcher = batcher
        self._dim = dim
        self._project = project
        self._context_mark = context_mark
        self.limits = limits
        self.overlap = default_overlap(tokenizer.max_tokens)
        self.accepting = False  # set by the lifecycle: after warm-up, until draining

    async def embed(
        self,
        texts: list[str],
        *,
        truncate: bool | None = None,
        keep_last: bool = False,
        param: str = "inputs",
        name_of: Callable[[int], str] | None = None,
        max_inputs: int | None = None,
        disconnected: Disconnected | None = None,
        by_window: bool = False,
    ) -> Embeddings:
        """Embeddings of `texts`; `param` names the request field in error messages.

        `truncate`: None embeds a text past the model's limit in windows, True cuts it, False
        refuses it, and `keep_last` cuts from the start (`service.windows`);
        `name_of(i)` names text i in messages (default `param[i]`);
        `max_inputs` overrides the request limit (pair routes send two texts per pair);
        `disconnected` (the ASGI `receive`) returns when the client leaves; its work is dropped then;
        `by_window`: each input's window vectors and character spans too (`service.windows`).
        """
        if not self.accepting:
            raise NotReady("the service is not ready (starting or draining)")
        name_of = name_of or (lambda i: f"{param}[{i}]")
        self._check_limits(texts, param, name_of, max_inputs or self.limits.max_inputs)
        self._batcher.refuse_if_full(len(texts))
        encoded = await self._tokenizer.encode_async(
            texts, lambda checked: _check_texts(checked, name_of), offsets=by_window
        )
        _check_tokens(encoded, name_of)
        windows = split(
            encoded.ids,
            self._tokenizer.max_tokens,
            truncate,
            self.overlap,
            name_of,
            keep_last,
            self._context_mark,
        )
        # each window's own vector reads all of its tokens: marked rows go again, unmarked
        marked = windows.marked() if by_window else []
        deadline = time.monotonic() + self.limits.timeout_s
        sent = [*windows.rows, *windows.plain(marked)] if marked else windows.rows
        job = self._batcher.submit(sent, deadline, request_id=current_request_id())
        out = await self._wait(job, disconnected)
        rows = out[: len(windows.rows)]
        vectors = windows.pool(rows, self._dim, self._project)
        found = None
        if by_window:
            alone = rows[:, : self._dim]
            if marked:
                alone = alone.copy()
                alone[marked] = out[len(windows.rows) :, : self._dim]
            found = window_vectors(windows, alone, texts, encoded.offsets or [])
        return Embeddings(vectors, windows.tokens, len(windows.rows), windows.truncated, found)

    def tokens(self, texts: list[str], add_special_tokens: bool = True) -> list[list[dict]]:
        """/tokenize: each text's tokens, within the same limits and checks as `embed`."""
        name_of = lambda i: f"inputs[{i}]"  # noqa: E731
        self._check_limits(texts, "inputs", name_of, self.limits.max_inputs)
        _check_texts(texts, name_of)
        return self._tokenizer.tokens(texts, add_special_tokens)

    def decode(self, ids: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        """/decode: the texts of token id rows (at most `max_inputs` rows, each of at most
        `max_input_chars` ids, as a text has no more tokens than characters)."""
        self.check_count(len(ids), "ids", "rows")
        for i, row in enumerate(ids):
            if len(row) > self.limits.max_input_chars:
                raise InputTooLong(
                    f"ids[{i}] has {len(row)} ids; at most {self.limits.max_input_chars} are taken",
                    param=f"ids[{i}]",
                )
        try:
            return self._tokenizer.decode(ids, skip_special_tokens)
        except ValueError as exc:
            raise InvalidInput(str(exc), param="ids") from exc

    def check_count(self, count: int, param: str, what: str = "inputs") -> None:
        """Raise TooManyInputs if a request field holds more than `max_inputs` items."""
        if count > self.limits.max_inputs:
            raise TooManyInputs(
                f"{param} has {count} {what}; at most {self.limits.max_inputs} are taken",
                param=param,
            )

    def _check_limits(
        self, texts: list[str], param: str, name_of: Callable[[int], str], max_inputs: int
    ) -> None:
        if len(texts) > max_inputs:
            raise TooManyInputs(
                f"{param} has {len(texts)} inputs; at most {max_inputs} are taken", param=param
            )
        limit = self.limits.max_input_chars
        for i, text in enumerate(texts):
            if len(text) > limit:
                raise InputTooLong(
                    f"{name_of(i)} has {len(text)} characters; at most {limit} are taken",
                    param=name_of(i),
                )

    async def _wait(self, job: Job, disconnected: Disconnected | None) -> np.ndarray:
        """The job's rows, unless the deadline passes or the client leaves first.

        Timers, not tasks: the deadline is a loop timer; the disconnect watch (a task reading
        the connection) starts only once the job has waited WATCH_AFTER_S, so that the many
        requests answered sooner pay nothing for it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(
            max(0.0, job.deadline - time.monotonic()),
            _abandon,
            self._batcher,
            job,
            DeadlineExceeded(f"no answer within the deadline of {self.limits.timeout_s} s"),
        )
        watch = _Watch(self._batcher, job, disconnected) if disconnected is not None else None
        try:
            return await job.future
        except asyncio.CancelledError:
            self._batcher.cancel(job)
            raise
        finally:
            deadline.cancel()
            if watch is not None:
                watch.cancel()


def _check_tokens(encoded: Encoded, name_of: Callable[[int], str]) -> None:
    """Raise InvalidInput for the first text the tokenizer found no token in."""
    for i, row in enumerate(encoded.ids):
        if not row:
            raise InvalidInput(f"{name_of(i)} has no tokens", param=name_of(i))


def _check_texts(texts: list[str], name_of: Callable[[int], str]) -> None:
    """Raise InvalidInput for the first text that is empty, only whitespace, or holds a control character."""
    for i, text in enumerate(texts):
        if not text or text.isspace():
            raise InvalidInput(f"{name_of(i)} is empty or only whitespace", param=name_of(i))
        found = CONTROL_CHARS.search(text)
        if found is not None:
            raise InvalidInput(
                f"{name_of(i)} holds the control character U+{ord(found.group()):04X} "
                f"at position {found.start()}",
                param=name_of(i),
            )


def _abandon(batcher: Batcher, job: Job, error: Exception) -> None:
    """Drop the job's remaining work and answer its request with `error`."""
    batcher.cancel(job)
    if not job.future.done():
        job.future.set_exception(error)


class _Watch:
    """Watches the client's connection while a job waits; a disconnect abandons the job."""

    def __init__(self, batcher: Batcher, job: Job, disconnected: Disconnected) -> None:
        self._batcher = batcher
        self._job = job
        self._disconnected = disconnected
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await self._disconnected()
        _abandon(self._batcher, self._job, ClientGone("the client closed the connection"))

    def cancel(self) -> None:
        """Stop watching."""
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
