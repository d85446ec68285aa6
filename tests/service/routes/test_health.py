"""GET /health, /ready, /info, /metrics and the OpenAPI document, over the app."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.service.conftest import AppClient, GatedEngine

pytestmark = pytest.mark.anyio


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.json() == {"status": "ok"}
    assert "connection" not in health.headers  # connections are kept while serving
    assert (await client.get("/ready")).json() == {"status": "ready"}


async def test_draining_turns_not_ready_and_refuses_work(client: httpx.AsyncClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert await runtime.drain(1.0)
    ready = await client.get("/ready")
    refused = await client.post("/embed", json={"inputs": "a man"})
    refused_v1 = await client.post("/v1/embeddings", json={"input": "a man"})
    assert (await client.get("/health")).status_code == 200  # alive while draining
    assert ready.status_code == 503
    assert ready.json()["error_type"] == "unavailable"
    assert refused.status_code == 503
    assert "retry-after" in refused.headers
    assert refused_v1.status_code == 503
    assert refused_v1.json()["error"]["type"] == "server_error"
    # no client reuses a connection that the shutdown is about to close
    assert {r.headers["connection"] for r in (ready, refused, refused_v1)} == {"close"}


async def test_drain_finishes_admitted_work(app_client: AppClient) -> None:
    async with app_client(engine_factory=GatedEngine) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        runtime.engine.gate.clear()
        admitted = asyncio.create_task(client.post("/embed", json={"inputs": ["a", "b"]}))
        await asyncio.sleep(0.1)  # in inference, held at the gate
        assert runtime.batcher.unfinished == 1
        asyncio.get_running_loop().call_later(0.3, runtime.engine.gate.set)
        assert await runtime.drain(5.0)
        response = await admitted
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert response.headers["connection"] == "close"  # answered during the drain


async def test_health_fails_when_the_worker_died(client: httpx.AsyncClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    await asyncio.to_thread(runtime.batcher.stop)
    assert (await client.get("/health")).status_code == 503


async def test_info(client: httpx.AsyncClient) -> None:
    info = (await client.get("/info")).json()
    assert info["model_id"] == "gensen-tiny"
    assert info["dim"] == 32
    assert info["provider"] == "cpu"
    assert info["limits"]["max_inputs"] > 0
    assert {"service", "onnxruntime", "tokenizers"} <= set(info["versions"])
    assert info["card"]["labels"]["nli"] == ["entailment", "neutral", "contradiction"]


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/embed", json={"inputs": ["a man", "a dog"]})
    await client.post("/embed", json={})
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        'gensen_requests_total{route="/embed",status="200"} 1.0',
        'gensen_request_duration_seconds_count{route="/embed",status="422"} 1.0',
        'gensen_rejected_requests_total{reason="validation"} 1.0',
        "gensen_queue_depth 0.0",
        "gensen_queue_wait_seconds_count 1.0",
        "gensen_batch_rows_count",
        "gensen_batch_tokens_count",
        "gensen_batch_padding_ratio_count",
        'gensen_inference_duration_seconds_count{model="encoder"}',
        "gensen_inputs_total 2.0",
        "gensen_tokens_total",
        'gensen_model_info{name="gensen-tiny",provider="cpu",version="0.0.1"} 1.0',
    ):
        assert name in text, name
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert all(name.startswith("gensen_") for name in names)


async def test_openapi_documents_routes_and_errors(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for route in ("/embed", "/similarity", "/paraphrase", "/nli", "/v1/embeddings"):
        assert {"413", "422", "429", "503", "504"} <= set(paths[route]["post"]["responses"])
    for route in ("/health", "/ready", "/info", "/metrics", "/v1/models"):
        assert "get" in paths[route]
    schemas = spec["components"]["schemas"]
    for route in ("/embed", "/similarity", "/paraphrase", "/nli", "/v1/embeddings"):
        body = paths[route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].removeprefix("#/components/schemas/") in schemas
    assert "SimilarityInputs" in schemas  # nested models come along
    assert (await client.get("/docs")).status_code == 200
    error_429 = paths["/v1/embeddings"]["post"]["responses"]["429"]
    assert error_429["content"]["application/json"]["schema"]["$ref"].endswith("OpenAIError")
