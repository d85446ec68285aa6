"""The client against a real service on loopback (the tiny bundle), sync and async."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gensen_client import AsyncClient, Client, InvalidRequest, RetryPolicy, TooLarge

from models.tiny import tiny_sentences
from tests.service.conftest import REPO_ROOT, ServiceProcess

MAX_INPUTS = 8


@pytest.fixture(scope="module")
def service(tiny_bundle: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(tiny_bundle, "--max-inputs", str(MAX_INPUTS))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def served_embed(url: str, texts: list[str], **options: object) -> np.ndarray:
    """/embed's vectors, MAX_INPUTS at a time, the reference the client must match."""
    parts = []
    for start in range(0, len(texts), MAX_INPUTS):
        body = {"inputs": texts[start : start + MAX_INPUTS], **options}
        parts.append(httpx.post(f"{url}/embed", json=body, timeout=30).json())
    return np.concatenate([np.array(p, dtype=np.float32) for p in parts])


def test_embed_splits_long_lists_and_keeps_their_order(service: ServiceProcess) -> None:
    texts = tiny_sentences(61, seed=3)
    with Client(service.url, concurrency=4) as client:
        vectors = client.embed(texts)
        raw = client.embed(texts[:5], normalize=False)
        assert client.max_inputs() == MAX_INPUTS
        assert client.stats.requests >= 8  # 61 texts at 8 a request
    np.testing.assert_allclose(vectors, served_embed(service.url, texts), atol=1e-6)
    np.testing.assert_allclose(
        raw, served_embed(service.url, texts[:5], normalize=False), atol=1e-5
    )
    assert vectors.dtype == np.float32


def test_embed_windows_gives_each_texts_windows_in_order(service: ServiceProcess) -> None:
    """Over the split into requests of MAX_INPUTS texts, each text keeps its windows; a long
    text's windows embed as their spans' characters alone do."""
    long = " ".join(tiny_sentences(12, seed=5))  # past the tiny bundle's 32 tokens
    texts = [*tiny_sentences(9, seed=4), long]
    with Client(service.url) as client:
        found = client.embed_windows(texts)
        alone = client.embed([long[w.start : w.stop] for w in found[-1]])
    assert [len(windows) for windows in found[:-1]] == [1] * 9
    assert len(found[-1]) > 1
    assert (found[-1][0].start, found[-1][-1].stop) == (0, len(long))
    vectors = np.array([w.embedding for w in found[-1]])
    assert (vectors * alone).sum(axis=1).min() >= 0.999
    np.testing.assert_allclose(found[0][0].embedding, served_embed(service.url, texts[:1])[0])


def test_async_client_gives_the_same_answers(service: ServiceProcess) -> None:
    texts = tiny_sentences(20, seed=4)
    pairs = list(zip(texts[::2], texts[1::2], strict=True))

    async def run():
        async with AsyncClient(service.url) as client:
            return await asyncio.gather(
                client.embed(texts),
                client.similarity(texts[0], texts[1:]),
                client.paraphrase(pairs),
                client.nli(pairs),
            )

    vectors, cosines, paraphrase, nli = asyncio.run(run())
    np.testing.assert_allclose(vectors, served_embed(service.url, texts), atol=1e-6)
    np.testing.assert_allclose(cosines, vectors[1:] @ vectors[0], atol=1e-5)
    with Client(service.url) as client:
        assert client.paraphrase(pairs) == paraphrase
        assert client.nli(pairs) == nli
    expected = httpx.post(
        f"{service.url}/nli",
        json={"pairs": [{"premise": a, "hypothesis": b} for a, b in pairs[:8]]},
    ).json()
    assert nli[:8] == expected
    assert len(paraphrase) == len(nli) == 10


def test_service_errors_are_typed_and_carry_the_request_id(service: ServiceProcess) -> None:
    with Client(service.url) as client:
        with pytest.raises(InvalidRequest) as empty:
            client.embed([*["fine"] * 10, "   "])
        with pytest.raises(TooLarge, match="truncate is false"):
            client.embed([" ".join(["a"] * 40)], truncate=False)
    assert empty.value.status == 422
    # the service counts from its request's first input; the message says where that was
    assert empty.value.message == (
        "input[2] is empty or only whitespace (in the request that held items 8 to 10)"
    )
    assert empty.value.request_id


def test_a_service_that_is_not_there_fails_after_the_retry_budget() -> None:
    from gensen_client import ConnectionFailed

    from tests.service.conftest import free_port

    policy = RetryPolicy(max_wait_s=0.5, backoff_s=0.05)
    with Client(f"http://127.0.0.1:{free_port()}", max_inputs=4, retry=policy) as client:
        with pytest.raises(ConnectionFailed, match="failed"):
            client.embed(["a"])
        assert client.stats.retries >= 2


def test_importing_the_client_needs_only_httpx_and_numpy() -> None:
    code = (
        "import sys, gensen_client, gensen_client.bulk; "
        "heavy = {'fastapi', 'onnxruntime', 'torch', 'service', 'tokenizers', 'pydantic'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "client")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
