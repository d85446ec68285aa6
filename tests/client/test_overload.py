"""The client under a competing load that fills the service's queue: 429s are retried, not raised."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gensen_client import Client, RetryPolicy

from models.tiny import tiny_sentences
from tests.service.conftest import ServiceProcess, report_figure

pytestmark = pytest.mark.slow
# Three greedy competitors keep 192 of the 256 places taken: the client's own 8 requests of 64
# overfill the rest, so it meets 429s, and there is room for it once it backs off. (Competitors
# that alone ask for more than the queue holds starve any client that honours Retry-After.)
COMPETITORS = 3


@pytest.fixture
def crowded(tiny_bundle: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        tiny_bundle, "--max-inputs", "64", "--queue-capacity", "256", "--max-batch-rows", "16"
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def competing_load(url: str, stop: threading.Event, texts: list[str]) -> None:
    """Posts 64 texts a request, as fast as answers come, 429s and all."""
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            http.post(f"{url}/embed", json={"inputs": texts})


def test_ten_thousand_sentences_arrive_whole_and_in_order(crowded: ServiceProcess) -> None:
    texts = tiny_sentences(10_000, seed=7)
    stop = threading.Event()
    others = [
        threading.Thread(
            target=competing_load, args=(crowded.url, stop, texts[i * 64 : i * 64 + 64])
        )
        for i in range(COMPETITORS)
    ]
    for thread in others:
        thread.start()
    try:
        with Client(crowded.url, concurrency=8, retry=RetryPolicy(max_wait_s=120)) as client:
            vectors = client.embed(texts)
            stats = client.stats
    finally:
        stop.set()
        for thread in others:
            thread.join()
    with Client(crowded.url, concurrency=2) as quiet:
        reference = quiet.embed(texts, normalize=False)  # through /embed, one by one of 64
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosines = (vectors * reference).sum(1)
    report_figure(
        "client retries of 429 under a competing load", stats.retried_statuses.get(429, 0)
    )
    assert vectors.shape == (10_000, reference.shape[1])
    assert cosines.min() >= 0.9999
    assert stats.retried_statuses.get(429, 0) > 0  # the queue did fill, and nothing was raised
