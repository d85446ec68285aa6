"""Refitting a pair head on frozen vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.config import HeadFit
from models.encoder import PairClassifier
from models.heads import fit_head, nli_pairs


def test_fit_head_learns_a_pair_relation_and_keeps_the_best_epoch():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((2000, 8)).astype(np.float32)
    same = rng.random(2000) < 0.5
    v = np.where(
        same[:, None], u + 0.1 * rng.standard_normal((2000, 8)), rng.standard_normal((2000, 8))
    ).astype(np.float32)
    head = PairClassifier(8, 2, hidden=16, dropout=0.0)
    accuracy = fit_head(
        head, u, v, same.astype(np.int64), HeadFit(epochs=15, lr=3e-3, batch=64), seed=0
    )
    assert accuracy > 0.95
    with torch.no_grad():
        predicted = (
            head.eval()(torch.from_numpy(u[:200]), torch.from_numpy(v[:200])).argmax(1).numpy()
        )
    assert (predicted == same[:200]).mean() > 0.95


def test_nli_pairs_are_sick_train_and_optionally_snli(shared_data):
    from models.data import read_sick, read_snli

    sick = len(read_sick(shared_data, "train"))
    snli = len(read_snli(shared_data, "dev")) + len(read_snli(shared_data, "test"))
    assert len(nli_pairs(shared_data, with_snli=False)) == sick
    pairs = nli_pairs(shared_data, with_snli=True)
    assert len(pairs) == sick + snli
    assert {label for *_, label in pairs} == {0, 1, 2}


def test_temperature_scaling_calibrates_overconfident_logits():
    from models.heads import calibration_error, fit_temperature, softmax

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 5000)
    logits = rng.standard_normal((5000, 3)).astype(np.float32)
    logits[np.arange(5000), labels] += 1.0  # right about 60% of the time...
    logits *= 6  # ...but sure of itself
    temperature = fit_temperature(logits, labels)
    assert 4 < temperature < 8
    before = calibration_error(softmax(logits), labels)
    after = calibration_error(softmax(logits / temperature), labels)
    assert before > 0.2
    assert after < 0.03


def test_best_threshold_is_the_most_accurate_cut_nearest_a_half():
    from models.heads import best_threshold

    probability = np.array([0.1, 0.2, 0.35, 0.4, 0.7, 0.9])
    labels = np.array([0, 0, 1, 1, 1, 1])
    assert best_threshold(probability, labels) == pytest.approx(0.275)
    assert best_threshold(np.array([0.2, 0.8]), np.array([0, 1])) == pytest.approx(0.5)


def test_best_threshold_stays_at_a_half_unless_another_cut_is_clearly_better():
    from models.heads import best_threshold

    rng = np.random.default_rng(0)
    probability = rng.random(4000)
    calibrated = (rng.random(4000) < probability).astype(int)
    # calibrated probabilities: the best cut on a sample differs from 0.5 by noise alone
    assert abs(best_threshold(probability, calibrated) - 0.5) < 0.01
    # every pair below 0.7 is negative: 0.7 is better by far more than a standard error
    shifted = (probability >= 0.7).astype(int)
    assert best_threshold(probability, shifted) == pytest.approx(0.7, abs=0.01)


def test_baked_temperature_divides_the_logits():
    from models.heads import bake_temperature

    head = PairClassifier(4, 3, hidden=8, dropout=0.0).eval()
    u, v = torch.randn(5, 4), torch.randn(5, 4)
    with torch.no_grad():
        before = head(u, v)
        bake_temperature(head, 2.5)
        torch.testing.assert_close(head(u, v), before / 2.5)


def _pairs(relation, n: int = 1200, dim: int = 8, seed: int = 0):
    """Unit-free random pairs labelled by `relation(cosine)`."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, dim)).astype(np.float32)
    mix = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    v = (mix * u + (1 - np.abs(mix)) * rng.standard_normal((n, dim))).astype(np.float32)
    cosine = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return u, v, relation(cosine).astype(np.int64)


def test_linear_head_fits_to_convergence_and_l2_shrinks_it():
    from models.heads import HeadShape

    u, v, labels = _pairs(lambda c: c > 0.3)
    fit = HeadFit(folds=3)
    loose = HeadShape(0, 1e-5).fit(8, 2, u, v, labels, fit, seed=0)
    tight = HeadShape(0, 1e-1).fit(8, 2, u, v, labels, fit, seed=0)
    assert loose.hidden == 0
    assert len(loose.layers) == 2
    with torch.no_grad():
        predicted = loose(torch.from_numpy(u), torch.from_numpy(v)).argmax(1).numpy()
        assert (predicted == labels).mean() > 0.9
        assert tight.layers[-1].weight.norm() < 0.5 * loose.layers[-1].weight.norm()


def test_folds_score_each_shape_on_pairs_it_did_not_see():
    from models.heads import HeadShape, head_shapes, shapes_on_folds

    fit = HeadFit(epochs=20, lr=3e-3, batch=64, folds=3, linear_l2=[1e-4], hidden=[32])
    shapes = head_shapes(fit, default_hidden=512)
    assert [s.name for s in shapes] == ["linear l2=0.0001", "tanh 32"]
    several = HeadFit(linear_l2=[1e-4, 1e-2], hidden=[64, 16])
    assert [s.name for s in head_shapes(several, 512)] == [
        "linear l2=0.01",
        "linear l2=0.0001",
        "tanh 16",
        "tanh 64",
    ]
    assert head_shapes(HeadFit(), default_hidden=512) == [HeadShape(512)]
    u, v, labels = _pairs(lambda c: c > 0.3)
    held_out, accuracy = shapes_on_folds(shapes, u, v, labels, 2, fit, seed=0)
    assert held_out[shapes[0]].shape == (len(labels), 2)
    assert accuracy[shapes[0]] > 90
    # labels that nothing predicts: a head can learn its own folds, never the one it did not see
    noise = np.random.default_rng(1).integers(0, 2, len(labels))
    _, accuracy = shapes_on_folds(shapes, u, v, noise, 2, fit, seed=0)
    assert all(40 < a < 60 for a in accuracy.values())


def test_the_simplest_shape_within_a_standard_error_is_served():
    from models.heads import HeadShape, simplest_good_shape

    strong, weak, tanh = HeadShape(0, 1e-2), HeadShape(0, 1e-4), HeadShape(64)
    # 4,000 pairs at 90%: one standard error is 0.47 points
    assert simplest_good_shape({strong: 89.6, weak: 89.9, tanh: 90.0}, 4000) == strong
    assert simplest_good_shape({strong: 89.4, weak: 89.9, tanh: 90.0}, 4000) == weak
    assert simplest_good_shape({strong: 85.0, weak: 88.0, tanh: 90.0}, 4000) == tanh
