"""Faults in the engine, through the app: a failing inference fails only its batch (500 with the
request id) and the worker goes on; a stuck one is cut off by the inference timeout; /health
answers all along. The engine is the real one, built through the runtime's engine factory."""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from typing import Any

import httpx
import numpy as np
import pytest
from tokenizers import Tokenizer

from service.engine import Engine
from tests.service.conftest import AppClient

pytestmark = pytest.mark.anyio
POISON = "kitchen"  # a word the warm-up never uses
STALL = "guitar"


class FaultyEngine(Engine):
    """The real ONNX Runtime engine, except that a batch holding the POISON token raises and a
    batch holding the STALL token hangs until `release` is set (or `stall_s` passes)."""

    def __init__(self, bundle: Any, *, stall_s: float = 30.0, **options: Any) -> None:
        super().__init__(bundle, **options)
        tokenizer = Tokenizer.from_file(str(bundle.files["tokenizer"]))
        self.poison = tokenizer.token_to_id(POISON)
        self.stall = tokenizer.token_to_id(STALL)
        self.stall_s = stall_s
        self.release = threading.Event()
        self.calls = 0

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray, alone: bool = False) -> np.ndarray:
        self.calls += 1
        if (input_ids == self.poison).any():
            raise RuntimeError("injected encoder failure")
        if (input_ids == self.stall).any():
            self.release.wait(self.stall_s)
        return super().embed(input_ids, lengths, alone)


def faulty(client: httpx.AsyncClient) -> FaultyEngine:
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    assert isinstance(engine, FaultyEngine)
    return engine


async def test_a_failing_batch_fails_only_its_own_requests(
    app_client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with app_client(engine_factory=FaultyEngine, max_batch_rows=1) as client:
        poisoned, good = await asyncio.gather(
            client.post("/embed", json={"inputs": f"a {POISON}"}, headers={"X-Request-Id": "p-1"}),
            client.post("/embed", json={"inputs": "a man"}),
        )
        after = await client.post("/v1/embeddings", json={"input": ["a man", "a dog"]})
        health = await client.get("/health")
        metrics = (await client.get("/metrics")).text
    assert poisoned.status_code == 500
    assert poisoned.json() == {
        "error": "inference failed; see the service log (request id p-1)",
        "error_type": "backend",
    }
    assert poisoned.headers["x-request-id"] == "p-1"
    assert good.status_code == 200  # another batch
    assert after.status_code == 200  # the worker went on
    assert health.status_code == 200
    assert 'gensen_rejected_requests_total{reason="backend"} 1.0' in metrics
    failure = next(r for r in caplog.records if r.getMessage() == "encoder failed on a batch")
    assert failure.request_ids == ["p-1"]  # type: ignore[attr-defined]


async def test_every_request_of_the_failing_batch_gets_500(app_client: AppClient) -> None:
    async with app_client(
        engine_factory=FaultyEngine, max_wait_ms=300, batch_runners=2, intra_op_threads=1
    ) as client:
        # one runner stalls, so that the other waits for more work and batches all three
        stalled = asyncio.ensure_future(client.post("/embed", json={"inputs": f"a {STALL}"}))
        await asyncio.sleep(0.3)
        answers = await asyncio.gather(
            client.post("/embed", json={"inputs": ["a man", "a dog"]}),
            client.post("/embed", json={"inputs": f"the {POISON}"}),
            client.post("/v1/embeddings", json={"input": "a cat"}),
        )
        faulty(client).release.set()
        assert (await stalled).status_code == 200
        after = await client.post("/embed", json={"inputs": "a man"})
    assert [a.status_code for a in answers] == [500, 500, 500]  # one batch
    assert answers[2].json()["error"]["code"] == "inference_failed"
    assert after.status_code == 200


async def test_a_stuck_inference_is_cut_off_and_health_keeps_answering(
    app_client: AppClient,
) -> None:
    async with app_client(
        engine_factory=partial(FaultyEngine, stall_s=30.0), inference_timeout_s=0.6
    ) as client:
        engine = faulty(client)
        stuck = asyncio.create_task(client.post("/embed", json={"inputs": f"a {STALL}"}))
        await asyncio.sleep(0.2)  # the worker is busy with it now
        start = time.perf_counter()
        busy_health = await client.get("/health")
        health_seconds = time.perf_counter() - start
        answer = await stuck
        waited = time.perf_counter() - start + 0.2
        stuck_health = await client.get("/health")
        stuck_ready = await client.get("/ready")
        engine.release.set()  # the run returns at last
        await asyncio.sleep(0.1)
        recovered = await client.post("/embed", json={"inputs": "a man"})
        health_after = await client.get("/health")
    assert busy_health.status_code == 200
    assert health_seconds < 0.1
    assert answer.status_code == 504
    assert answer.json()["error_type"] == "inference_timeout"
    assert 0.5 < waited < 2.0
    assert stuck_health.status_code == stuck_ready.status_code == 503
    assert "past its timeout" in stuck_health.json()["error"]
    assert recovered.status_code == 200
    assert health_after.status_code == 200


async def test_requests_queued_behind_a_stuck_batch_get_their_deadline(
    app_client: AppClient,
) -> None:
    async with app_client(
        engine_factory=partial(FaultyEngine, stall_s=30.0),
        inference_timeout_s=5.0,
        request_timeout_s=0.5,
        batch_runners=1,  # the one runner is stuck: nothing else computes the queued request
    ) as client:
        engine = faulty(client)
        stuck = asyncio.create_task(client.post("/embed", json={"inputs": f"a {STALL}"}))
        await asyncio.sleep(0.1)
        queued = await client.post("/embed", json={"inputs": "a man"})
        engine.release.set()
        answers = [await stuck, queued]
    assert [a.status_code for a in answers] == [504, 504]
    assert {a.json()["error_type"] for a in answers} == {"deadline_exceeded"}
