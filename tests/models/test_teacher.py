"""The offline teacher (installed by `make install-train`; skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

from models import teacher


@pytest.fixture(scope="module")
def model():
    try:
        return teacher.Teacher(threads=1)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        pytest.skip(f"teacher packages not installed ({error}); run make install-train")


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
