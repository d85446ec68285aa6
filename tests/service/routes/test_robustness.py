"""Odd and hostile bodies on every route: only documented answers, and the service keeps serving."""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.anyio
ROUTES = ("/embed", "/v1/embeddings", "/similarity", "/paraphrase", "/nli")
ODD_TEXTS = ["", " ", "\x00", "é" * 50, "😀 🚀", "a\nb\tc", "<s> </s> <pad> <unk>", "x" * 5000]
BODIES: list[object] = [
    None,
    [],
    "text",
    42,
    {"inputs": None},
    {"inputs": {"nested": True}},
    {"input": [None]},
    {"pairs": [[1, 2]]},
    {"pairs": [{"premise": None, "hypothesis": "a"}]},
    {"inputs": {"source_sentence": 3, "sentences": "a"}},
    {"inputs": ["a"] * 10_000},
    {"input": "a", "dimensions": -1, "encoding_format": None},
    {"inputs": [1e308, -1]},
]
DOCUMENTED = {200, 400, 404, 413, 422}


def bodies_for(route: str) -> list[object]:
    odd: list[object] = []
    for text in ODD_TEXTS:
        odd += [
            {"inputs": text},
            {"input": text},
            {"inputs": {"source_sentence": text, "sentences": [text]}},
            {"pairs": [[text, text]]},
            {"pairs": [{"premise": text, "hypothesis": text}]},
        ]
    return BODIES + odd


@pytest.mark.parametrize("route", ROUTES)
async def test_only_documented_answers(client: httpx.AsyncClient, route: str) -> None:
    for body in bodies_for(route):
        response = await client.post(route, json=body)
        assert response.status_code in DOCUMENTED, (body, response.text)
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        if response.status_code != 200:
            assert "error" in answer
    for raw in (b"", b"{", b"\xff\xfe", b"[" * 10_000, b'{"inputs": "a"}' * 3):
        response = await client.post(route, content=raw)
        assert response.status_code in {400, 422}, raw[:20]


async def test_bad_requests_do_not_disturb_good_ones(client: httpx.AsyncClient) -> None:
    good = [client.post("/embed", json={"inputs": ["a man", "a dog"]}) for _ in range(20)]
    bad = [client.post("/embed", content=b"{") for _ in range(20)]
    answers = await asyncio.gather(*good, *bad)
    assert [a.status_code for a in answers[:20]] == [200] * 20
    assert (await client.get("/ready")).status_code == 200
