"""What the load tests share: the real bundle, a service process, and load from loopback clients.

The load tests run `python -m service` on the shipped bundle (models/gensen-base, copied first,
so that a bundle being rewritten meanwhile cannot change under a running test): with the tiny
test bundle inference costs nothing and HTTP alone would be measured. Clients are httpx on
loopback; every figure is measured in the same run as the capacity it is compared with.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from models.tiny import WORDS
from service.bundle import BundleError, load_bundle
from service.settings import DEFAULT_BUNDLE

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
BACKOFF_S = 0.05
ANSWER_WITHIN_S = 30.0


@pytest.fixture(scope="session")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of models/gensen-base."""
    try:
        load_bundle(DEFAULT_BUNDLE)
    except BundleError as exc:
        pytest.skip(f"the load tests need the shipped bundle: {exc}")
    return Path(shutil.copytree(DEFAULT_BUNDLE, tmp_path_factory.mktemp("load") / "gensen-base"))


def request_texts(count: int, per_request: int, seed: int = 1) -> list[list[str]]:
    """`count` distinct requests of `per_request` English-like sentences of 6 to 30 words."""
    rng = random.Random(seed)
    return [
        [" ".join(rng.choices(WORDS, k=rng.randint(6, 30))) + " ." for _ in range(per_request)]
        for _ in range(count)
    ]


@dataclass
class Outcome:
    """One request's fate: its status (None if it got no answer), latency, and what it sent."""

    index: int
    sent_at: float
    seconds: float
    status: int | None = None
    retry_after: str | None = None
    body: object = None
    error: str | None = None


@dataclass
class Closed:
    """A closed-loop run: answers per second and their latencies; refusals (429) apart."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    refused: int = 0

    @property
    def rate(self) -> float:
        """Requests answered 200 per second."""
        return len(self.latencies) / self.seconds

    def quantile(self, q: float) -> float:
        """Latency quantile `q` (0..1) of the 200 answers, in seconds."""
        return float(np.quantile(self.latencies, q)) if self.latencies else 0.0


async def closed_loop(
    client: httpx.AsyncClient, send: Send, clients: int, seconds: float
) -> Closed:
    """`clients` loops each sending its next request when the last is answered, for `seconds`;
    a loop refused with 429 waits BACKOFF_S before it sends again (as a polite client would)."""
    end = time.monotonic() + seconds
    run = Closed(seconds)

    async def loop() -> None:
        while time.monotonic() < end:
            start = time.monotonic()
            response = await send(client)
            if response.status_code == 429:
                run.refused += 1
                await asyncio.sleep(BACKOFF_S)
                continue
            assert response.status_code == 200, response.text
            run.latencies.append(time.monotonic() - start)

    start = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(clients)))
    run.seconds = time.monotonic() - start
    return run


async def open_loop(
    client: httpx.AsyncClient, sends: list[Send], rate: float, seconds: float
) -> list[Outcome]:
    """Requests at a fixed `rate` per second for `seconds`, whatever the answers (open loop):
    request i goes at i / rate, cycling through `sends`. Every request's outcome is kept; one
    unanswered after ANSWER_WITHIN_S counts as lost."""
    count = int(rate * seconds)
    start = time.monotonic()

    async def one(i: int) -> Outcome:
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        sent = time.monotonic()
        outcome = Outcome(index=i, sent_at=sent - start, seconds=0.0)
        try:
            response = await asyncio.wait_for(sends[i % len(sends)](client), ANSWER_WITHIN_S)
        except (httpx.HTTPError, TimeoutError) as exc:
            outcome.error = type(exc).__name__
        else:
            outcome.status = response.status_code
            outcome.retry_after = response.headers.get("retry-after")
            outcome.body = response.json()
        outcome.seconds = time.monotonic() - sent
        return outcome

    return list(await asyncio.gather(*(one(i) for i in range(count))))


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The load generator's own garbage collector kept off the clock: the test process holds
    pytest's heap (torch and all, once the model tests are collected), and a full collection
    over it stalls every client of the loop for hundreds of milliseconds, which a latency
    bound would then charge to the service."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def median(values: list[float]) -> float:
    """The median, 0 for no values."""
    return statistics.median(values) if values else 0.0


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")
