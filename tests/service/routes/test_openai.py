"""POST /v1/embeddings and GET /v1/models: OpenAI shapes over the app, and the official client."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from tests.service.conftest import ServiceProcess

pytestmark = pytest.mark.anyio
MODEL = "gensen-tiny"
TEXTS = ["a man is playing the guitar", "a dog is running in the park"]


async def native(client: httpx.AsyncClient, texts: list[str]) -> np.ndarray:
    return np.array((await client.post("/embed", json={"inputs": texts})).json())


async def test_float_embeddings(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/embeddings", json={"input": TEXTS, "model": MODEL})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    got = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_allclose(got, await native(client, TEXTS), atol=1e-6)


async def test_base64_is_little_endian_float32(client: httpx.AsyncClient) -> None:
    body = {"input": TEXTS[0], "model": MODEL, "encoding_format": "base64"}
    data = (await client.post("/v1/embeddings", json=body)).json()["data"]
    got = np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(got, (await native(client, TEXTS[:1]))[0], atol=1e-6)


async def test_dimensions_truncate_then_renormalise(client: httpx.AsyncClient) -> None:
    body = {"input": TEXTS, "model": MODEL, "dimensions": 8}
    data = (await client.post("/v1/embeddings", json=body)).json()["data"]
    got = np.array([d["embedding"] for d in data])
    full = await native(client, TEXTS)
    want = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    assert got.shape == (2, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)


async def test_model_may_be_left_out(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/embeddings", json={"input": "a man"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"input": "a", "model": "text-embedding-3-small"}, 404, "model_not_found", "model"),
        ({"input": "a", "encoding_format": "int8"}, 422, "invalid_value", "encoding_format"),
        ({"input": "a", "dimensions": 0}, 422, "invalid_value", "dimensions"),
        ({"input": "a", "dimensions": 33}, 422, "invalid_value", "dimensions"),
        ({"input": [[1, 2, 3]]}, 422, "invalid_value", "input"),
        ({"input": [1, 2, 3]}, 422, "invalid_value", "input"),
        ({"model": MODEL}, 422, "invalid_value", "input"),
    ],
)
async def test_errors_have_the_openai_shape(
    client: httpx.AsyncClient, body: dict[str, object], status: int, code: str, param: str
) -> None:
    response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"]) == (code, param)


async def test_unknown_v1_route_has_the_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_models(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL]
    assert body["data"][0]["object"] == "model"


def test_official_client_round_trip(served: ServiceProcess) -> None:
    """The `openai` package, unchanged, against a real server: base64 (its default) and float."""
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    default = client.embeddings.create(model=MODEL, input=TEXTS)  # asks for base64
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    short = client.embeddings.create(model=MODEL, input=TEXTS[0], dimensions=8)
    got = np.array([d.embedding for d in default.data])
    assert got.shape == (2, 32)
    np.testing.assert_allclose(got, [d.embedding for d in floats.data], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert len(short.data[0].embedding) == 8
    assert default.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert missing.value.code == "model_not_found"
