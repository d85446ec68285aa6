"""`Client` (sync) and `AsyncClient`: the service's routes as Python calls returning numpy arrays.

    from gensen_client import Client

    with Client("http://localhost:8080") as client:
        vectors = client.embed(["A man is playing a guitar.", "A dog runs."])  # [2, dim]

Lists longer than the service's `max_inputs` (read once from `/info`) are split into requests
sent concurrently and put back in order: up to `concurrency` at a time, fewer while the service
answers 429 (the limit halves at each, and grows back by one per round of answers). 429 and 503 answers are
retried after their `Retry-After`, connection failures after a short backoff, until the
`RetryPolicy`'s total wait is spent; then the service's error is raised as a typed exception
(`gensen_client.errors`). With several URLs, calls go to each in turn.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from gensen_client import _core
from gensen_client._core import Call, Plan, RetryPolicy, Stats, Window


class _Settings:
    """What both clients are configured with."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        api_key: str | None,
        timeout: float,
        concurrency: int,
        max_inputs: int | None,
        retry: RetryPolicy | None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.urls = _core.base_urls(url)
        self._next_url = itertools.cycle(self.urls)
        self.headers = _core.headers(api_key)
        self.timeout = httpx.Timeout(timeout)
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.stats = Stats()
        self.in_flight = _core.AdaptiveLimit(concurrency)
        self._max_inputs = max_inputs
        self.limits = httpx.Limits(max_connections=concurrency * len(self.urls) + 2)

    def url_for(self, call: Call) -> str:
        return next(self._next_url) + call.path


class _ClientBase:
    """The constructor both clients share: `url` (or several, used in turn), an API key, a
    timeout per request in seconds, at most `concurrency` requests in flight, `max_inputs` per
    request (None: the service's), and the retry policy."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        concurrency: int = 4,
        max_inputs: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._s = _Settings(
            url,
            api_key=api_key,
            timeout=timeout,
            concurrency=concurrency,
            max_inputs=max_inputs,
            retry=retry,
        )
        self._open()

    def _open(self) -> None:
        """The transport: an HTTP client and what guards the in-flight limit."""
        raise NotImplementedError

    @property
    def stats(self) -> Stats:
        """Requests sent and retries made so far."""
        return self._s.stats


class Client(_ClientBase):
    """Synchronous client; safe to share between threads. Use as a context manager, or `close()`."""

    def _open(self) -> None:
        s = self._s
        self._http = httpx.Client(headers=s.headers, timeout=s.timeout, limits=s.limits)
        self._pool = ThreadPoolExecutor(s.concurrency, thread_name_prefix="gensen-client")
        self._room = threading.Condition()  # guards self._s.in_flight

    def info(self) -> dict[str, Any]:
        """The service's `/info` (model card, limits, versions) from the first URL."""
        return self._get("/info")

    def max_inputs(self) -> int:
        """Inputs per request: the constructor's value, else the service's limit."""
        if self._s._max_inputs is None:
            self._s._max_inputs = int(self.info()["limits"]["max_inputs"])
        return self._s._max_inputs

    def embed(
        self, texts: str | Sequence[str], *, normalize: bool = True, truncate: bool | None = None
    ) -> np.ndarray:
        """Vectors float32 [len(texts), dim], in order; `truncate` as the service's /embed."""
        items = _core.as_list(texts)
        return self._run(_core.embed_plan(items, self.max_inputs(), normalize, truncate))

    def embed_windows(
        self, texts: str | Sequence[str], *, normalize: bool = True
    ) -> list[list[Window]]:
        """Each text's windows in order (character span, tokens, vector): passage vectors of
        long texts without chunking them here; a text within the model's limit is one window."""
        items = _core.as_list(texts)
        return self._run(_core.windows_plan(items, self.max_inputs(), normalize))

    def similarity(self, source: str, sentences: Sequence[str]) -> np.ndarray:
        """Cosine of `source` with each of `sentences`, float32 [len(sentences)]."""
        items = _core.as_list(sentences, "sentences")
        return self._run(_core.similarity_plan(source, items, self.max_inputs()))

    def paraphrase(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """For each (a, b): `{"paraphrase": bool, "probability": float}`."""
        return self._run(_core.pairs_plan("/paraphrase", list(pairs), self.max_inputs()))

    def nli(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """For each (premise, hypothesis): `{"label": str, "scores": {label: probability}}`."""
        return self._run(_core.pairs_plan("/nli", list(pairs), self.max_inputs()))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, plan: Plan) -> Any:
        if len(plan.calls) == 1:
            return plan.combine([self._send(plan.calls[0])])
        return plan.combine(list(self._pool.map(self._send, plan.calls)))

    def _get(self, path: str) -> Any:
        call = Call(path, {}, lambda body: body)
        try:
            response = self._http.get(self._s.urls[0] + path)
        except httpx.HTTPError as exc:
            raise _core.connection_error(self._s.urls[0] + path, exc) from exc
        return _core.read_answer(response, call)

    def _send(self, call: Call) -> Any:
        retrying, limit = _core.Retrying(self._s.retry, self._s.stats), self._s.in_flight
        retry = False
        while True:
            with self._room:
                self._room.wait_for(lambda r=retry: limit.may_start(r))
                limit.start(retry)
            url, response, failure = self._s.url_for(call), None, None
            try:
                response = self._http.post(url, json=call.body)
            except httpx.HTTPError as exc:
                failure = _core.connection_error(url, exc)
            finally:
                retry = response is not None and response.status_code == 429
                with self._room:
                    limit.finish(overloaded=retry)
                    self._room.notify_all()
            try:
                done, value = retrying.settle(call, response, failure)
            except Exception:
                if retry:
                    with self._room:
                        limit.give_up()
                        self._room.notify_all()
                raise
            if done:
                return value
            time.sleep(value)


class AsyncClient(_ClientBase):
    """Asynchronous client (asyncio); the same methods as `Client`, awaited."""

    def _open(self) -> None:
        s = self._s
        self._http = httpx.AsyncClient(headers=s.headers, timeout=s.timeout, limits=s.limits)
        self._room = asyncio.Condition()  # guards self._s.in_flight

    async def info(self) -> dict[str, Any]:
        """The service's `/info` from the first URL."""
        url = self._s.urls[0] + "/info"
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            raise _core.connection_error(url, exc) from exc
        return _core.read_answer(response, Call("/info", {}, lambda body: body))

    async def max_inputs(self) -> int:
        """Inputs per request: the constructor's value, else the service's limit."""
        if self._s._max_inputs is None:
            self._s._max_inputs = int((await self.info())["limits"]["max_inputs"])
        return self._s._max_inputs

    async def embed(
        self, texts: str | Sequence[str], *, normalize: bool = True, truncate: bool | None = None
    ) -> np.ndarray:
        """Vectors float32 [len(texts), dim], in order; `truncate` as the service's /embed."""
        items = _core.as_list(texts)
        size = await self.max_inputs()
        return await self._run(_core.embed_plan(items, size, normalize, truncate))

    async def embed_windows(
        self, texts: str | Sequence[str], *, normalize: bool = True
    ) -> list[list[Window]]:
        """As `Client.embed_windows`."""
        items = _core.as_list(texts)
        return await self._run(_core.windows_plan(items, await self.max_inputs(), normalize))

    async def similarity(self, source: str, sentences: Sequence[str]) -> np.ndarray:
        """Cosine of `source` with each of `sentences`, float32 [len(sentences)]."""
        items = _core.as_list(sentences, "sentences")
        return await self._run(_core.similarity_plan(source, items, await self.max_inputs()))

    async def paraphrase(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """For each (a, b): `{"paraphrase": bool, "probability": float}`."""
        size = await self.max_inputs()
        return await self._run(_core.pairs_plan("/paraphrase", list(pairs), size))

    async def nli(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """For each (premise, hypothesis): `{"label": str, "scores": {label: probability}}`."""
        return await self._run(_core.pairs_plan("/nli", list(pairs), await self.max_inputs()))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, plan: Plan) -> Any:
        return plan.combine(await asyncio.gather(*(self._send(call) for call in plan.calls)))

    async def _send(self, call: Call) -> Any:
        retrying, limit = _core.Retrying(self._s.retry, self._s.stats), self._s.in_flight
        retry = False
        while True:
            async with self._room:
                await self._room.wait_for(lambda r=retry: limit.may_start(r))
                limit.start(retry)
            url, response, failure = self._s.url_for(call), None, None
            try:
                response = await self._http.post(url, json=call.body)
            except httpx.HTTPError as exc:
                failure = _core.connection_error(url, exc)
            finally:
                retry = response is not None and response.status_code == 429
                async with self._room:
                    limit.finish(overloaded=retry)
                    self._room.notify_all()
            try:
                done, value = retrying.settle(call, response, failure)
            except Exception:
                if retry:
                    async with self._room:
                        limit.give_up()
                        self._room.notify_all()
                raise
            if done:
                return value
            await asyncio.sleep(value)
