"""POST /paraphrase and POST /nli over HTTP through the app."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.conftest import AppClient, bundle_with_threshold, heads_threshold

pytestmark = pytest.mark.anyio
PAIRS = [
    ["a man is playing the guitar", "a man plays a guitar"],
    ["a dog is running in the park", "the woman is cooking"],
    ["two children", "two children"],
]
NLI_LABELS = {"entailment", "neutral", "contradiction"}


async def test_paraphrase(client: httpx.AsyncClient, tiny_bundle: Path) -> None:
    response = await client.post("/paraphrase", json={"pairs": PAIRS})
    assert response.status_code == 200
    answers = response.json()
    assert len(answers) == 3
    for answer in answers:
        assert set(answer) == {"paraphrase", "probability"}
        assert 0.0 <= answer["probability"] <= 1.0
        assert answer["paraphrase"] == (answer["probability"] >= heads_threshold(tiny_bundle))


async def test_paraphrase_answers_at_the_cards_threshold(
    client: httpx.AsyncClient, app_client: AppClient, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A card whose threshold lies between the answers' probabilities splits them there."""
    probabilities = sorted(
        a["probability"] for a in (await client.post("/paraphrase", json={"pairs": PAIRS})).json()
    )
    threshold = (probabilities[0] + probabilities[-1]) / 2
    async with app_client(bundle=bundle_with_threshold(tiny_bundle, tmp_path, threshold)) as moved:
        answers = (await moved.post("/paraphrase", json={"pairs": PAIRS})).json()
    assert [a["paraphrase"] for a in answers] == [a["probability"] >= threshold for a in answers]
    assert len({a["paraphrase"] for a in answers}) == 2


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
