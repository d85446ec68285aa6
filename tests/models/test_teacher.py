"""The offline teacher (installed by `make install-train`; skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

from models import teacher


def _loaded(network: type[teacher.Teacher]) -> teacher.Teacher:
    try:
        return network(threads=1)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        pytest.skip(f"teacher packages not installed ({error}); run make install-train")


@pytest.fixture(scope="module")
def model():
    return _loaded(teacher.Teacher)


def test_vectors_do_not_depend_on_batch_mates(model):
    sentences = [
        "A man is playing a guitar.",
        "Dogs run.",
        "The quick brown fox jumps over the lazy dog near the river bank.",
    ]
    together = model.embed(sentences)
    alone = np.stack([model.embed([s])[0] for s in sentences])
    assert together.shape == (3, 384)
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_paraphrases_are_closer_than_unrelated(model):
    a, b, c = model.embed(
        [
            "A man is playing a guitar.",
            "A person plays the guitar.",
            "The stock market fell sharply.",
        ]
    )
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert cos(a, b) > cos(a, c) + 0.3


def test_cache_is_reused(model, tmp_path, monkeypatch):
    first = teacher.cached_teacher_vectors(["one sentence", "another one"], tmp_path)
    monkeypatch.setattr(teacher.Teacher, "embed", lambda *a, **k: pytest.fail("cache not used"))
    again = teacher.cached_teacher_vectors(["one sentence", "another one"], tmp_path)
    np.testing.assert_allclose(first, again, atol=1e-2)  # cached as float16


def test_combined_targets_keep_the_mean_of_the_teachers_cosines():
    rng = np.random.default_rng(0)
    first = rng.standard_normal((400, 12)).astype(np.float32)
    second = first + 0.5 * rng.standard_normal((400, 12)).astype(np.float32)
    combined = teacher.combined_targets([first, second], dim=24)  # all the variance
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    centred = np.hstack([unit(first), unit(second)]) / np.sqrt(2)
    centred -= centred.mean(0)
    np.testing.assert_allclose(combined @ combined.T, centred @ centred.T, atol=1e-4)
    assert teacher.combined_targets([first], dim=4) is first
    assert teacher.combined_targets([first, second], dim=6).shape == (400, 6)


def test_unknown_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown teacher"):
        teacher.cached_teacher_vectors(["a"], tmp_path, name="bert-huge")


@pytest.fixture(scope="module")
def minilm_l6():
    return _loaded(teacher.MiniLML6Teacher)


def test_one_pass_of_minilm_l6_gives_its_last_and_its_4th_layer(minilm_l6, tmp_path, monkeypatch):
    sentences = ["What is the capital of France?", "The film was a waste of time."]
    both = minilm_l6.embed_all(sentences)
    assert set(both) == {teacher.MINILM_L6, teacher.MINILM_L6_LAYER4}
    np.testing.assert_allclose(minilm_l6.embed(sentences), both[teacher.MINILM_L6])
    cut_model = teacher.MiniLML6Teacher(threads=1).model
    del cut_model.encoder.layer[4:]  # the network cut after its 4th layer
    cut = np.stack([_mean_state(cut_model, minilm_l6.tokenizer.encode(s).ids) for s in sentences])
    np.testing.assert_allclose(both[teacher.MINILM_L6_LAYER4], cut, atol=1e-4)
    assert not np.allclose(both[teacher.MINILM_L6], cut, atol=1e-2)
    # one pass fills both caches
    first = teacher.cached_teacher_vectors(sentences, tmp_path, name=teacher.MINILM_L6_LAYER4)
    assert len(list(tmp_path.glob("teacher-*.npy"))) == 2
    monkeypatch.setattr(teacher.Teacher, "embed_all", lambda *a, **k: pytest.fail("recomputed"))
    last = teacher.cached_teacher_vectors(sentences, tmp_path, name=teacher.MINILM_L6)
    np.testing.assert_allclose(first, cut, atol=1e-2)
    np.testing.assert_allclose(last, both[teacher.MINILM_L6], atol=1e-2)


def test_standardised_targets_have_zero_mean_and_unit_variance():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((500, 8)).astype(np.float32) * [1, 2, 50, 0.1, 1, 1, 1, 1] + 7
    out = teacher.standardised(raw)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-4)


def _mean_state(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        states = model(input_ids=torch.tensor([ids])).last_hidden_state
    return states[0].mean(0).numpy()
