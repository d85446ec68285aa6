"""What the sync and async clients share: requests as plans, retry timing, answer decoding.

A public method builds a `Plan`: the HTTP calls it needs (one per chunk of at most the service's
`max_inputs` inputs) and how to fold their answers into one result. The clients differ only in
how they send the calls (threads or tasks), so every rule lives here once.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from gensen_client.errors import ConnectionFailed, GensenError, error_from_answer

RETRY_STATUSES = frozenset({429, 503})
REQUEST_ID = "x-request-id"


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a call again: on 429 and 503 (after `Retry-After`, or a short backoff when the
    answer has none) and on connection failures, until `max_wait_s` of waiting is spent."""

    max_wait_s: float = 60.0  # total sleep over the retries of one call
    backoff_s: float = 0.25  # first delay without Retry-After; doubled at each retry
    max_delay_s: float = 10.0  # no single delay is longer

    def delay(self, attempt: int, retry_after: str | None, waited: float) -> float | None:
        """Seconds to sleep before attempt `attempt + 1`, or None when the budget is spent."""
        try:
            wanted = float(retry_after) if retry_after is not None else None
        except ValueError:
            wanted = None  # an HTTP date, or junk: fall back to the backoff
        if wanted is None:
            wanted = self.backoff_s * 2**attempt
        # jitter: clients told the same Retry-After should not all come back at once
        seconds = min(self.max_delay_s, wanted) * random.uniform(1.0, 1.2)
        if waited + seconds > self.max_wait_s:
            return None
        return seconds


class AdaptiveLimit:
    """How many calls may be in flight at once, adapting to the service's queue (AIMD).

    A 429 halves the limit (down to 1), and each `limit` answered calls raise it by one, up to
    `ceiling`. A call that waits to be retried goes before any new call, so that the client's
    own fresh calls never take the room a retried one was waiting for. The clients wrap the
    checks in their own condition variable (threads or asyncio); the counting lives here.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = self.limit = ceiling
        self.in_flight = self.retries_waiting = 0
        self._answered = 0

    def may_start(self, retry: bool) -> bool:
        return self.in_flight < self.limit and (retry or self.retries_waiting == 0)

    def start(self, retry: bool) -> None:
        self.in_flight += 1
        if retry:
            self.retries_waiting -= 1

    def finish(self, overloaded: bool) -> None:
        """A call's attempt ended; `overloaded`: with a 429 (the call will be retried)."""
        self.in_flight -= 1
        if overloaded:
            self.limit = max(1, self.limit // 2)
            self._answered = 0
            self.retries_waiting += 1
            return
        self._answered += 1
        if self._answered >= self.limit and self.limit < self.ceiling:
            self.limit += 1
            self._answered = 0

    def give_up(self) -> None:
        """A call that was waiting to be retried will not be (its error is raised)."""
        self.retries_waiting -= 1


class Retrying:
    """The retry state of one call: `settle` says whether an attempt ended it."""

    def __init__(self, policy: RetryPolicy, stats: Stats) -> None:
        self.policy, self.stats = policy, stats
        self.waited, self.attempt = 0.0, 0

    def settle(
        self, call: Call, response: httpx.Response | None, failure: GensenError | None
    ) -> tuple[bool, Any]:
        """(True, answer) when the call is over (an error answer is raised); (False, seconds)
        when it is to be tried again after that sleep."""
        self.stats.requests += 1
        status = retry_after = None
        if response is not None:
            if response.status_code not in RETRY_STATUSES:
                return True, read_answer(response, call)
            status, retry_after = response.status_code, response.headers.get("retry-after")
        delay = self.policy.delay(self.attempt, retry_after, self.waited)
        if delay is None:
            if response is None:
                raise failure
            return True, read_answer(response, call)  # raises the 429 or 503
        self.stats.retries += 1
        if status is not None:
            self.stats.retried_statuses[status] = self.stats.retried_statuses.get(status, 0) + 1
        self.waited, self.attempt = self.waited + delay, self.attempt + 1
        return False, delay


@dataclass(frozen=True)
class Call:
    """One POST and how to read its JSON answer; `span` is the (first, last) item of the
    caller's list it carries, when the list was split over several calls."""

    path: str
    body: dict[str, Any]
    decode: Callable[[Any], Any]
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Plan:
    """The calls of one client method and how to fold their decoded answers (in order)."""

    calls: list[Call]
    combine: Callable[[list[Any]], Any]


@dataclass
class Stats:
    """What a client did so far (counters are approximate under concurrent use)."""

    requests: int = 0
    retries: int = 0
    retried_statuses: dict[int, int] = field(default_factory=dict)


def spans(parts: list[slice]) -> list[tuple[int, int] | None]:
    """Each part's (first, last) index, or None throughout when there is a single part."""
    if len(parts) < 2:
        return [None] * len(parts)
    return [(part.start, part.stop - 1) for part in parts]


def chunks(count: int, size: int) -> list[slice]:
    """Consecutive slices of at most `size` items covering `count` items."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def as_list(texts: str | Sequence[str], name: str = "texts") -> list[str]:
    """One text or a sequence of them as a list; anything else is refused here, not by the server."""
    if isinstance(texts, str):
        return [texts]
    items = list(texts)
    if not all(isinstance(t, str) for t in items):
        raise TypeError(f"{name} must be a string or a sequence of strings")
    return items


def decode_base64_embeddings(answer: Any) -> np.ndarray:
    """`/v1/embeddings` data with base64 float32 vectors -> array [n, dim] in input order."""
    rows = sorted(answer["data"], key=lambda item: item["index"])
    raw = b"".join(base64.b64decode(item["embedding"]) for item in rows)
    return np.frombuffer(raw, dtype="<f4").reshape(len(rows), -1).astype(np.float32)


def decode_float_embeddings(answer: Any) -> np.ndarray:
    """`/embed`'s list of lists -> array [n, dim]."""
    return np.asarray(answer, dtype=np.float32)


def stack(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def concatenate(parts: list[list[Any]]) -> list[Any]:
    return [item for part in parts for item in part]


@dataclass(frozen=True)
class Window:
    """One window of a text: its character span [start, stop), its tokens and its vector."""

    start: int
    stop: int
    tokens: int
    embedding: np.ndarray


def decode_windows(answer: Any) -> list[list[Window]]:
    """`/embed`'s answer with `windows: true` -> each text's windows, in order."""
    return [
        [
            Window(w["start"], w["stop"], w["tokens"], np.asarray(w["embedding"], dtype=np.float32))
            for w in windows
        ]
        for windows in answer
    ]


def windows_plan(texts: list[str], size: int, normalize: bool) -> Plan:
    """Each text's window vectors and spans, from /embed with `windows: true`."""
    parts = chunks(len(texts), size)
    calls = [
        Call(
            "/embed",
            {"inputs": texts[part], "normalize": normalize, "windows": True},
            decode_windows,
            span,
        )
        for part, span in zip(parts, spans(parts), strict=True)
    ]
    return Plan(calls, concatenate)


def embed_plan(texts: list[str], size: int, normalize: bool, truncate: bool | None) -> Plan:
    """Unit vectors come from /v1/embeddings as base64 (no float parsing); raw vectors and
    explicit truncation need /embed."""
    if normalize and truncate is None:
        parts = chunks(len(texts), size)
        calls = [
            Call(
                "/v1/embeddings",
                {"input": texts[part], "encoding_format": "base64"},
                decode_base64_embeddings,
                span,
            )
            for part, span in zip(parts, spans(parts), strict=True)
        ]
    else:
        options: dict[str, Any] = {"normalize": normalize}
        if truncate is not None:
            options["truncate"] = truncate
        parts = chunks(len(texts), size)
        calls = [
            Call("/embed", {"inputs": texts[part], **options}, decode_float_embeddings, span)
            for part, span in zip(parts, spans(parts), strict=True)
        ]
    return Plan(calls, stack)


def similarity_plan(source: str, sentences: list[str], size: int) -> Plan:
    parts = chunks(len(sentences), size)
    calls = [
        Call(
            "/similarity",
            {"inputs": {"source_sentence": source, "sentences": sentences[part]}},
            lambda answer: np.asarray(answer, dtype=np.float32),
            span,
        )
        for part, span in zip(parts, spans(parts), strict=True)
    ]
    return Plan(calls, stack)


def pairs_plan(path: str, pairs: list[tuple[str, str]], size: int) -> Plan:
    """/paraphrase or /nli over `pairs` of (first, second) texts."""

    def body(part: list[tuple[str, str]]) -> dict[str, Any]:
        if path == "/nli":
            return {"pairs": [{"premise": a, "hypothesis": b} for a, b in part]}
        return {"pairs": [[a, b] for a, b in part]}

    items = [tuple(p) for p in pairs]
    if not all(len(p) == 2 and all(isinstance(t, str) for t in p) for p in items):
        raise TypeError("pairs must be (text, text) tuples")
    parts = chunks(len(items), size)
    calls = [
        Call(path, body(items[part]), list, span)
        for part, span in zip(parts, spans(parts), strict=True)
    ]
    return Plan(calls, concatenate)


def read_answer(response: httpx.Response, call: Call) -> Any:
    """The decoded answer of a 200, else the service's error as an exception."""
    request_id = response.headers.get(REQUEST_ID)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text
    if response.status_code != 200:
        error = error_from_answer(response.status_code, body, request_id)
        if call.span is not None:  # the service counts from the request's first item
            error.message += f" (in the request that held items {call.span[0]} to {call.span[1]})"
        raise error
    try:
        return call.decode(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise GensenError(
            f"unexpected answer from {call.path}: {exc}", status=200, request_id=request_id
        ) from exc


def connection_error(url: str, exc: httpx.HTTPError) -> ConnectionFailed:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return ConnectionFailed(f"request to {url} {kind}: {exc!s}")


def headers(api_key: str | None) -> dict[str, str]:
    base = {"user-agent": "gensen-client"}
    if api_key:
        base["authorization"] = f"Bearer {api_key}"
    return base


def base_urls(url: str | Sequence[str]) -> list[str]:
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("at least one service URL is needed")
    return [u.rstrip("/") for u in urls]
