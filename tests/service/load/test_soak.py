"""Soak: mixed traffic on every route (good, bad, too large, clients that leave) for minutes,
with the service's resident memory sampled: after warm-up it must not grow beyond a small bound.

`make test` runs the short soak (SHORT_S); `make soak` the long one (GENSEN_SOAK_SECONDS,
default LONG_S).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ServiceProcess, report_figure
from tests.service.load.conftest import request_texts, rss_bytes

SHORT_S = 75.0
LONG_S = float(os.environ.get("GENSEN_SOAK_SECONDS", "900"))
CLIENTS = 4
SAMPLE_EVERY_S = 0.5
MIB = 1024 * 1024
GROWTH_BOUND = 16 * MIB  # after warm-up (the bound holds for the long run as well)
Call = Callable[[httpx.AsyncClient, random.Random], Awaitable[int | str]]


@pytest.mark.slow
def test_soak_short(real_bundle: Path) -> None:
    soak(real_bundle, SHORT_S, "soak (short)")


@pytest.mark.soak
def test_soak_long(real_bundle: Path) -> None:
    soak(real_bundle, LONG_S, "soak (long)")


def soak(bundle: Path, seconds: float, name: str) -> None:
    service = ServiceProcess(bundle, "--max-inputs", "64")
    try:
        service.wait_ready()
        statuses, samples = asyncio.run(_traffic(service, seconds))
        still_ready = httpx.get(f"{service.url}/ready").status_code
    finally:
        code, log = service.stop()
    warm_up = max(15.0, seconds / 4)
    after = [rss for t, rss in samples if t >= warm_up]
    window = max(5, len(after) // 10)
    start, end = statistics.median(after[:window]), statistics.median(after[-window:])
    growth = end - start
    total = sum(statuses.values())
    report_figure(
        name,
        f"{seconds:.0f} s, {total} requests ({total / seconds:.0f}/s) {dict(sorted(statuses.items(), key=str))}; "
        f"RSS after {warm_up:.0f} s warm-up {start / MIB:.1f} MiB -> {end / MIB:.1f} MiB "
        f"(growth {growth / MIB:+.1f} MiB, max {max(after) / MIB:.1f} MiB, bound "
        f"{GROWTH_BOUND / MIB:.0f} MiB)",
    )
    report_figure(name + " RSS by tenth of the run (MiB)", _trajectory(samples, seconds))
    assert code == 0, log
    assert still_ready == 200
    assert not [s for s in statuses if isinstance(s, int) and s >= 500], statuses
    assert growth < GROWTH_BOUND


def _trajectory(samples: list[tuple[float, int]], seconds: float) -> str:
    """RSS at each tenth of the run, in MiB."""
    marks = []
    for tenth in range(1, 11):
        upto = [rss for t, rss in samples if t <= seconds * tenth / 10]
        marks.append(f"{upto[-1] / MIB:.0f}" if upto else "-")
    return " ".join(marks)


async def _traffic(
    service: ServiceProcess, seconds: float
) -> tuple[Counter[int | str], list[tuple[float, int]]]:
    statuses: Counter[int | str] = Counter()
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    end = start + seconds

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            while time.monotonic() < end:
                call = rng.choices(CALLS, weights=WEIGHTS)[0]
                statuses[await call(http, rng)] += 1

    async def sample() -> None:
        while time.monotonic() < end:
            samples.append((time.monotonic() - start, rss_bytes(service.proc.pid)))
            await asyncio.sleep(SAMPLE_EVERY_S)

    await asyncio.gather(sample(), *(client(seed) for seed in range(CLIENTS)))
    return statuses, samples


TEXTS = request_texts(200, 16, seed=7)


def _texts(rng: random.Random, most: int = 16) -> list[str]:
    return rng.choice(TEXTS)[: rng.randint(1, most)]


async def _embed(http: httpx.AsyncClient, rng: random.Random) -> int:
    body = {"inputs": _texts(rng), "normalize": rng.random() < 0.8}
    return (await http.post("/embed", json=body)).status_code


async def _openai(http: httpx.AsyncClient, rng: random.Random) -> int:
    body: dict[str, object] = {
        "input": _texts(rng),
        "encoding_format": rng.choice(["float", "base64"]),
    }
    if rng.random() < 0.5:
        body["dimensions"] = rng.randint(1, 384)
    return (await http.post("/v1/embeddings", json=body)).status_code


async def _similarity(http: httpx.AsyncClient, rng: random.Random) -> int:
    texts = _texts(rng)
    body = {"inputs": {"source_sentence": texts[0], "sentences": _texts(rng)}}
    return (await http.post("/similarity", json=body)).status_code


async def _paraphrase(http: httpx.AsyncClient, rng: random.Random) -> int:
    a, b = _texts(rng, 8), _texts(rng, 8)
    return (
        await http.post("/paraphrase", json={"pairs": list(zip(a, b, strict=False))})
    ).status_code


async def _nli(http: httpx.AsyncClient, rng: random.Random) -> int:
    a, b = _texts(rng, 8), _texts(rng, 8)
    pairs = [{"premise": p, "hypothesis": h} for p, h in zip(a, b, strict=False)]
    return (await http.post("/nli", json={"pairs": pairs})).status_code


async def _bad(http: httpx.AsyncClient, rng: random.Random) -> int:
    body = rng.choice(
        [
            b"{",
            b'{"inputs": ""}',
            b'{"inputs": "a", "inputs": "b"}',
            b'{"inputs": "a\\u0000"}',
            b'{"input": "a", "dimensions": 1e400}',
            b'{"inputs": ["' + b"a " * 100 + b'"], "truncate": false}',
            b'{"inputs": ["x"' + b', "y"' * 70 + b"]}",  # more than --max-inputs
        ]
    )
    return (await http.post("/embed", content=body)).status_code


async def _leave(http: httpx.AsyncClient, rng: random.Random) -> int | str:
    """A client that gives up before its answer: the service drops its work."""
    try:
        await http.post("/embed", json={"inputs": TEXTS[0] * 4}, timeout=0.002)
    except httpx.TimeoutException:
        return "left"
    return 200


async def _read(http: httpx.AsyncClient, rng: random.Random) -> int:
    path = rng.choice(["/health", "/ready", "/info", "/metrics", "/v1/models"])
    return (await http.get(path)).status_code


CALLS: list[Call] = [_embed, _openai, _similarity, _paraphrase, _nli, _bad, _leave, _read]
WEIGHTS = [30, 20, 10, 10, 10, 8, 2, 10]
