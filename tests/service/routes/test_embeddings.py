"""POST /embed and POST /similarity over HTTP through the app: answers, batching parity, errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.bundle import load_bundle
from service.engine import Engine, pad_rows
from service.tokenization import TextTokenizer
from tests.service.conftest import AppClient, GatedEngine

pytestmark = pytest.mark.anyio
SENTENCES = [
    "a man is playing the guitar",
    "a dog is running in the park",
    "two children are riding a horse on the beach",
    "the woman is cooking",
    "a cat",
]


async def embed(client: httpx.AsyncClient, inputs: object, **options: object) -> httpx.Response:
    return await client.post("/embed", json={"inputs": inputs, **options})


async def test_one_text_gives_one_unit_vector(client: httpx.AsyncClient) -> None:
    response = await embed(client, "a man is playing the guitar")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    vectors = np.array(response.json())
    assert vectors.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


async def test_a_body_without_content_type_is_read_as_json(client: httpx.AsyncClient) -> None:
    # what `curl -d '{"inputs":"hi"}'` sends: a form content type
    response = await client.post(
        "/embed",
        content=b'{"inputs": "a man"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert len(response.json()) == 1


async def test_list_keeps_order_and_normalize_false_gives_raw_vectors(
    client: httpx.AsyncClient,
) -> None:
    raw = np.array((await embed(client, SENTENCES, normalize=False)).json())
    unit = np.array((await embed(client, SENTENCES)).json())
    assert raw.shape == (5, 32)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)
    for i, text in enumerate(SENTENCES):
        alone = np.array((await embed(client, text)).json())[0]
        np.testing.assert_allclose(alone, unit[i], atol=1e-5)


async def test_concurrent_requests_match_one_at_a_time(app_client: AppClient) -> None:
    async with app_client(max_batch_rows=4, max_wait_ms=5) as client:
        requests = [SENTENCES[i % 5 :] + SENTENCES[: i % 3] for i in range(24)]
        alone = [np.array((await embed(client, texts)).json()) for texts in requests]
        together = await asyncio.gather(*(embed(client, texts) for texts in requests))
        metrics = (await client.get("/metrics")).text
    for want, got in zip(alone, together, strict=True):
        np.testing.assert_allclose(np.array(got.json()), want, atol=1e-5)
    assert "gensen_batch_rows_count" in metrics


WORDS = ["a"] * 32 + ["man"] * 8  # a token each: 40 tokens, windows [0:32] and [8:40]


def _without_features(tiny_bundle: Path, tmp_path: Path) -> Path:
    """The tiny bundle as one exported before pooled features existed (no projection named)."""
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "no-features"))
    card = json.loads((copy / "model.json").read_text())
    del card["files"]["projection"], card["windows"]
    (copy / "model.json").write_text(json.dumps(card))
    return copy


async def test_a_long_input_is_its_windows_max_pooled_features_projected(
    app_client: AppClient, tiny_bundle: Path
) -> None:
    """The tiny bundle takes 32 tokens: the vector of 40 is the projection of the max of the
    two windows' pooled features, as the model pools one text. Each window pools only the
    states it owns: their overlap, tokens 8 to 31, splits at 20, and the other side's tokens
    are sent with the card's context mark (read, not pooled)."""
    bundle = load_bundle(tiny_bundle)
    engine = Engine(bundle, provider="cpu", intra_op_threads=1, runners=1)
    tokenizer = TextTokenizer(tiny_bundle / "tokenizer.json", 32)
    ids = tokenizer.encode([" ".join(WORDS)]).ids[0]
    mark = bundle.card["windows"]["context_mark"]
    first = ids[:20] + [t + mark for t in ids[20:32]]
    last = [t + mark for t in ids[8:20]] + ids[20:]
    rows = engine.embed(*pad_rows([first, last], tokenizer.pad_id))
    want = engine.project(rows[:, engine.dim :].max(axis=0, keepdims=True))[0]
    whole_windows = engine.embed(*pad_rows([ids[:32], ids[8:]], tokenizer.pad_id))
    unowned = engine.project(whole_windows[:, engine.dim :].max(axis=0, keepdims=True))[0]
    async with app_client() as client:
        whole = await embed(client, [" ".join(WORDS)], normalize=False)
    np.testing.assert_allclose(whole.json()[0], want, rtol=1e-4, atol=1e-5)
    assert np.abs(want - unowned).max() > 1e-3  # the marks matter


async def test_without_features_a_long_input_is_its_windows_weighted_mean(
    app_client: AppClient, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A bundle without pooled features is served as before: windows [0:32] and [8:40] are
    averaged by the tokens each adds (32 and 8)."""
    words = WORDS
    async with app_client(bundle=_without_features(tiny_bundle, tmp_path)) as client:
        whole = await client.post("/embed", json={"inputs": [" ".join(words)], "normalize": False})
        parts = await client.post(
            "/embed",
            json={"inputs": [" ".join(words[:32]), " ".join(words[8:])], "normalize": False},
        )
    first, last = np.array(parts.json())
    np.testing.assert_allclose(whole.json()[0], 0.8 * first + 0.2 * last, rtol=1e-4, atol=1e-5)


async def test_windows_answers_each_window_with_its_span_and_vector(app_client: AppClient) -> None:
    """With `windows: true`, a text of 90 tokens gives windows whose spans cover it in order,
    each with the vector its span's characters alone are embedded to; a short one is one window."""
    text = " ".join(f"{s}  " if i % 7 == 0 else s for i, s in enumerate(SENTENCES * 3))
    async with app_client() as client:
        answer = await embed(client, [text, "a cat"], windows=True)
        windows, short = answer.json()
        alone = await embed(client, [text[w["start"] : w["stop"]] for w in windows])
        pooled = await embed(client, text)
    assert answer.status_code == 200
    assert len(windows) > 2
    assert windows[0]["start"] == 0
    assert windows[-1]["stop"] == len(text)
    for before, after in itertools.pairwise(windows):
        assert before["start"] < after["start"] <= before["stop"] < after["stop"]
    assert all(w["tokens"] == 32 for w in windows)
    vectors = np.array([w["embedding"] for w in windows])
    assert (vectors * np.array(alone.json())).sum(axis=1).min() >= 0.999
    assert [(w["start"], w["stop"], w["tokens"]) for w in short] == [(0, 5, 2)]
    assert answer.headers["x-embedded-windows"] == str(len(windows) + 1)
    assert pooled.json()[0] not in [w["embedding"] for w in windows]


async def test_long_inputs_are_embedded_in_windows_unless_asked(app_client: AppClient) -> None:
    """Unless the request truncates (first 32 tokens) or refuses a long input."""
    text = " ".join(WORDS)
    async with app_client() as client:
        whole = await client.post("/embed", json={"inputs": [text], "normalize": False})
        cut = await embed(client, text, truncate=True)
        refused = await embed(client, [SENTENCES[0], text], truncate=False)
        usage = (await client.post("/v1/embeddings", json={"input": [text, "a"]})).json()
    assert whole.headers["x-embedded-tokens"] == "40"
    assert whole.headers["x-embedded-windows"] == "2"
    assert cut.headers["x-truncated-inputs"] == "1"
    assert cut.headers["x-embedded-tokens"] == "32"
    assert refused.status_code == 413
    assert refused.json()["error_type"] == "too_large"
    assert "inputs[1] has 40 tokens" in refused.json()["error"]
    assert usage["usage"]["windows"] == 3
    assert usage["usage"]["prompt_tokens"] == 41


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "inputs"),
        ({"inputs": []}, 422, "inputs"),
        ({"inputs": 3}, 422, "inputs"),
        ({"inputs": ["a", 3]}, 422, "inputs"),
        ({"inputs": "a", "normalize": "maybe"}, 422, "normalize"),
        ({"inputs": ""}, 422, "inputs[0]"),
    ],
)
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, body: dict[str, object], status: int, field: str
) -> None:
    response = await client.post("/embed", json=body)
    assert response.status_code == status
    answer = response.json()
    assert answer["error_type"] == "validation"
    assert answer["error"].startswith(field)


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/embed", content=b'{"inputs": ')
    assert response.status_code == 400
    assert response.json() == {
        "error": "body is not valid JSON: EOF while parsing a value at line 1 column 11",
        "error_type": "validation",
    }


async def test_request_limits_are_413(app_client: AppClient) -> None:
    async with app_client(max_inputs=3, max_input_chars=50) as client:
        too_many = await embed(client, ["a"] * 4)
        too_long = await embed(client, ["a", "b" * 51])
    assert too_many.status_code == 413
    assert "at most 3" in too_many.json()["error"]
    assert too_long.status_code == 413
    assert too_long.json()["error"].startswith("inputs[1] has 51 characters")


async def test_full_queue_is_429_with_retry_after(app_client: AppClient) -> None:
    async with app_client(
        engine_factory=GatedEngine, max_inputs=2, queue_capacity=4, batch_runners=1
    ) as client:
        engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
        engine.gate.clear()
        waiting = [asyncio.create_task(embed(client, ["a man", "a dog"]))]
        await asyncio.sleep(0.2)  # in inference, held at the gate
        waiting += [asyncio.create_task(embed(client, ["a man", "a dog"])) for _ in range(2)]
        await asyncio.sleep(0.2)  # queued behind it: the queue is full
        refused = await embed(client, ["a cat"])
        engine.gate.set()
        done = await asyncio.gather(*waiting)
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error_type"] == "overloaded"
    assert [r.status_code for r in done] == [200, 200, 200]
    assert 'gensen_rejected_requests_total{reason="overloaded"} 1.0' in metrics


async def test_past_its_deadline_is_504(app_client: AppClient) -> None:
    async with app_client(engine_factory=GatedEngine, request_timeout_s=0.05) as client:
        engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
        engine.gate.clear()
        response = await embed(client, "a man")
        engine.gate.set()
        assert response.status_code == 504
        assert response.json()["error_type"] == "deadline_exceeded"
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.batcher.queued_rows == 0  # its work was dropped


async def test_similarity(client: httpx.AsyncClient) -> None:
    body = {"inputs": {"source_sentence": SENTENCES[0], "sentences": [SENTENCES[0], *SENTENCES]}}
    response = await client.post("/similarity", json=body)
    assert response.status_code == 200
    scores = response.json()
    assert len(scores) == 6
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)
    vectors = np.array((await embed(client, [SENTENCES[0], SENTENCES[2]])).json())
    assert scores[3] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)


async def test_similarity_errors(app_client: AppClient) -> None:
    async with app_client(max_inputs=2) as client:
        empty = await client.post("/similarity", json={"inputs": {"source_sentence": "a"}})
        many = {"inputs": {"source_sentence": "a", "sentences": ["b", "c", "d"]}}
        too_many = await client.post("/similarity", json=many)
        blank = {"inputs": {"source_sentence": "a", "sentences": ["b", ""]}}
        no_tokens = await client.post("/similarity", json=blank)
    assert empty.status_code == 422
    assert empty.json()["error"].startswith("inputs.sentences")
    assert too_many.status_code == 413
    assert no_tokens.status_code == 422
    assert no_tokens.json()["error"].startswith("inputs.sentences[1]")
