"""text-embeddings-inference's surface: POST /, its /embed options, its /info fields, and the
Hugging Face client (huggingface_hub) against a real service process."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient

from tests.service.conftest import ServiceProcess

pytestmark = pytest.mark.anyio
SENTENCES = ["a man is playing the guitar", "a dog runs in the park", "the woman is cooking"]


async def test_root_embeds_texts_as_embed_does(client: httpx.AsyncClient) -> None:
    root = await client.post("/", json={"inputs": SENTENCES})
    embed = await client.post("/embed", json={"inputs": SENTENCES})
    one = await client.post("/", json={"inputs": SENTENCES[0], "normalize": False})
    assert root.status_code == 200
    assert root.json() == embed.json()
    assert len(one.json()) == 1
    assert root.headers["x-embedded-windows"] == "3"


async def test_root_scores_a_similarity_object_as_similarity_does(
    client: httpx.AsyncClient,
) -> None:
    inputs = {"source_sentence": SENTENCES[0], "sentences": SENTENCES[1:]}
    root = await client.post("/", json={"inputs": inputs})
    similarity = await client.post("/similarity", json={"inputs": inputs})
    assert root.status_code == 200
    assert root.json() == similarity.json()


async def test_truncation_direction_left_keeps_the_last_tokens(client: httpx.AsyncClient) -> None:
    words = ["a"] * 8 + ["man"] * 32  # 40 tokens; the tiny model takes 32
    left = await client.post(
        "/embed",
        json={"inputs": " ".join(words), "truncate": True, "truncation_direction": "Left"},
    )
    last = await client.post("/embed", json={"inputs": " ".join(words[-32:])})
    right = await client.post("/embed", json={"inputs": " ".join(words), "truncate": True})
    first = await client.post("/embed", json={"inputs": " ".join(words[:32])})
    np.testing.assert_allclose(left.json(), last.json(), atol=1e-6)
    np.testing.assert_allclose(right.json(), first.json(), atol=1e-6)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/embed", {"inputs": "a", "prompt_name": "query"}, "prompt_name"),
        ("/", {"inputs": "a", "prompt_name": "query"}, "prompt_name"),
        ("/embed", {"inputs": "a", "truncation_direction": "up"}, "truncation_direction"),
        ("/", {"inputs": {"source_sentence": "a"}}, "inputs"),
        ("/", {"inputs": 3}, "inputs"),
        ("/", {}, "inputs"),
    ],
)
async def test_bad_tei_options_are_clear_422s(
    client: httpx.AsyncClient, route: str, body: dict, field: str
) -> None:
    response = await client.post(route, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "validation"
    assert field in response.json()["error"]


async def test_info_has_tei_limit_fields(client: httpx.AsyncClient) -> None:
    info = (await client.get("/info")).json()
    assert info["max_input_length"] == info["max_tokens"]
    assert info["max_client_batch_size"] == info["limits"]["max_inputs"]
    assert info["max_batch_tokens"] == info["limits"]["batch_tokens"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a plain test: no event loop needed
def test_hugging_face_client_works_unchanged(served: ServiceProcess, anyio_backend: str) -> None:
    hf = InferenceClient(model=served.url)
    vector = hf.feature_extraction(SENTENCES[0])
    scores = hf.sentence_similarity(SENTENCES[0], other_sentences=SENTENCES[1:])
    embed = httpx.post(f"{served.url}/embed", json={"inputs": SENTENCES[0]}).json()
    similarity = httpx.post(
        f"{served.url}/similarity",
        json={"inputs": {"source_sentence": SENTENCES[0], "sentences": SENTENCES[1:]}},
    ).json()
    assert float(np.dot(np.ravel(vector), np.ravel(embed))) >= 0.9999
    np.testing.assert_allclose(scores, similarity, atol=1e-3)
