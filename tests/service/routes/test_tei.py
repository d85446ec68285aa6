"""text-embeddings-inference's surface: POST /, its /embed options, its /info fields (the
clients themselves run in test_clients.py)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

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


async def test_tokenize_lists_the_bundles_tokens_with_their_spans(
    client: httpx.AsyncClient,
) -> None:
    text = "A man is playing"
    (tokens,) = (await client.post("/tokenize", json={"inputs": text})).json()
    ids = [t["id"] for t in tokens]
    embed_ids = app_tokenizer_ids(client, text)
    assert ids == embed_ids
    for token in tokens:
        if not token["special"]:
            assert text[token["start"] : token["stop"]].lower() == token["text"]
    two = (await client.post("/tokenize", json={"inputs": [text, "a dog"]})).json()
    assert len(two) == 2


async def test_decode_gives_back_the_text_of_ids(client: httpx.AsyncClient) -> None:
    (tokens,) = (await client.post("/tokenize", json={"inputs": "a man is playing"})).json()
    ids = [t["id"] for t in tokens]
    one = await client.post("/decode", json={"ids": ids})
    rows = await client.post("/decode", json={"ids": [ids, ids[:1]]})
    assert one.json() == ["a man is playing"]
    assert rows.json() == ["a man is playing", "a"]


@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ("/tokenize", {"inputs": ""}, 422, "inputs[0] is empty"),
        ("/tokenize", {"inputs": ["a"] * 600}, 413, "at most"),
        ("/decode", {"ids": [10**9]}, 422, "ids"),
        ("/decode", {"ids": [-1]}, 422, "ids"),
        ("/decode", {"ids": []}, 422, "ids"),
        ("/decode", {"ids": ["a"]}, 422, "ids"),
    ],
)
async def test_bad_tokenizer_bodies_get_the_usual_errors(
    client: httpx.AsyncClient, route: str, body: dict, status: int, message: str
) -> None:
    response = await client.post(route, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def app_tokenizer_ids(client: httpx.AsyncClient, text: str) -> list[int]:
    from tests.service.conftest import app_of

    return app_of(client).state.runtime.tokenizer.encode([text]).ids[0]


async def test_the_new_routes_are_counted_in_the_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/", json={"inputs": "a"})
    await client.post("/tokenize", json={"inputs": "a"})
    await client.post("/decode", json={"ids": [5]})
    metrics = (await client.get("/metrics")).text
    for route in ("/", "/tokenize", "/decode"):
        assert f'route="{route}",status="200"' in metrics
