"""Numpy helpers and the pair heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.bundle import load_bundle
from service.engine import Engine
from service.heads import PairHeads, cosine, normalize, softmax, truncate_dims
from tests.service.conftest import bundle_with_threshold, heads_threshold

RNG = np.random.default_rng(0)


def test_normalize_gives_unit_rows_and_keeps_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(x), [[0.6, 0.8], [0.0, 0.0]])


def test_truncate_dims_cuts_then_renormalises() -> None:
    x = RNG.standard_normal((3, 10)).astype(np.float32)
    got = truncate_dims(x, 4)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, x[:, :4] / np.linalg.norm(x[:, :4], axis=1, keepdims=True))
    np.testing.assert_allclose(truncate_dims(x, None), normalize(x))
    np.testing.assert_allclose(truncate_dims(x, 99), normalize(x))


def test_cosine() -> None:
    source = np.array([1.0, 0.0], dtype=np.float32)
    others = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(cosine(source, others), [1.0, 0.0, -1.0], atol=1e-6)


def test_softmax_is_stable_and_sums_to_one() -> None:
    p = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]], dtype=np.float32))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]], atol=1e-6)


@pytest.fixture(scope="module")
def heads(tiny_bundle: Path) -> PairHeads:
    bundle = load_bundle(tiny_bundle)
    return PairHeads(Engine(bundle, provider="cpu"), bundle)


def test_paraphrase_uses_the_cards_threshold(
    heads: PairHeads, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Yes at or above the card's threshold: the tiny card's own, and one moved between the
    answers' probabilities, so that a fixed threshold would not pass."""
    u = RNG.standard_normal((9, 32)).astype(np.float32)
    v = RNG.standard_normal((9, 32)).astype(np.float32)
    answers = heads.paraphrase(u, v)
    for answer in answers:
        assert answer["paraphrase"] == (answer["probability"] >= heads_threshold(tiny_bundle))
    moved = float(np.median([a["probability"] for a in answers]))
    bundle = load_bundle(bundle_with_threshold(tiny_bundle, tmp_path, moved))
    again = PairHeads(Engine(bundle, provider="cpu", encoder=False), bundle).paraphrase(u, v)
    assert [a["paraphrase"] for a in again] == [a["probability"] >= moved for a in answers]
    assert len({a["paraphrase"] for a in again}) == 2


def test_nli_labels_follow_the_card(heads: PairHeads) -> None:
    u = RNG.standard_normal((4, 32)).astype(np.float32)
    answers = heads.nli(u, u[::-1].copy())
    assert len(answers) == 4
    for answer in answers:
        assert list(answer["scores"]) == ["entailment", "neutral", "contradiction"]
        assert answer["label"] == max(answer["scores"], key=answer["scores"].get)
