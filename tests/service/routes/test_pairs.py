"""POST /paraphrase and POST /nli over HTTP through the app."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.service.conftest import AppClient

pytestmark = pytest.mark.anyio
PAIRS = [
    ["a man is playing the guitar", "a man plays a guitar"],
    ["a dog is running in the park", "the woman is cooking"],
    ["two children", "two children"],
]
NLI_LABELS = {"entailment", "neutral", "contradiction"}


async def test_paraphrase(client: httpx.AsyncClient) -> None:
    response = await client.post("/paraphrase", json={"pairs": PAIRS})
    assert response.status_code == 200
    answers = response.json()
    assert len(answers) == 3
    for answer in answers:
        assert set(answer) == {"paraphrase", "probability"}
        assert 0.0 <= answer["probability"] <= 1.0
        assert answer["paraphrase"] == (answer["probability"] >= 0.5)  # the card's threshold


async def test_paraphrase_answers_do_not_depend_on_the_other_pairs(
    client: httpx.AsyncClient,
) -> None:
    together = (await client.post("/paraphrase", json={"pairs": PAIRS})).json()
    for pair, want in zip(PAIRS, together, strict=True):
        alone = (await client.post("/paraphrase", json={"pairs": [pair]})).json()[0]
        assert alone["probability"] == pytest.approx(want["probability"], abs=1e-5)


async def test_nli(client: httpx.AsyncClient) -> None:
    pairs = [{"premise": a, "hypothesis": b} for a, b in PAIRS]
    response = await client.post("/nli", json={"pairs": pairs})
    assert response.status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'gensen_inference_duration_seconds_count{model="nli"} 1.0' in metrics
    for answer in response.json():
        assert answer["label"] in NLI_LABELS
        assert set(answer["scores"]) == NLI_LABELS
        assert sum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        best = max(answer["scores"], key=answer["scores"].get)
        assert answer["label"] == best


async def test_nli_matches_the_head_on_the_embeddings(client: httpx.AsyncClient) -> None:
    premise, hypothesis = PAIRS[0]
    pair = {"premise": premise, "hypothesis": hypothesis}
    answer = (await client.post("/nli", json={"pairs": [pair]})).json()[0]
    raw = (await client.post("/embed", json={"inputs": PAIRS[0], "normalize": False})).json()
    u, v = np.array(raw, dtype=np.float32)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    want = runtime.heads.nli(u[None], v[None])[0]
    for label, score in want["scores"].items():
        assert answer["scores"][label] == pytest.approx(float(score), abs=1e-5)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/paraphrase", {"pairs": []}, "pairs"),
        ("/paraphrase", {"pairs": [["only one"]]}, "pairs[0]"),
        ("/paraphrase", {"pairs": "a, b"}, "pairs"),
        ("/nli", {"pairs": [{"premise": "a"}]}, "pairs[0].hypothesis"),
        ("/nli", {"pairs": [{"premise": "a", "hypothesis": ""}]}, "pairs[0].hypothesis"),
        ("/paraphrase", {"pairs": [["a", "b"], ["", "c"]]}, "pairs[1][0]"),
    ],
)
async def test_bad_pairs_name_the_field(
    client: httpx.AsyncClient, route: str, body: dict[str, object], field: str
) -> None:
    response = await client.post(route, json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(field)


async def test_too_many_pairs_is_413(app_client: AppClient) -> None:
    async with app_client(max_inputs=2) as client:
        response = await client.post("/paraphrase", json={"pairs": PAIRS})
    assert response.status_code == 413
    assert response.json()["error"] == "pairs has 3 pairs; at most 2 are taken"
