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


def test_baked_temperature_divides_the_logits():
    from models.heads import bake_temperature

    head = PairClassifier(4, 3, hidden=8, dropout=0.0).eval()
    u, v = torch.randn(5, 4), torch.randn(5, 4)
    with torch.no_grad():
        before = head(u, v)
        bake_temperature(head, 2.5)
        torch.testing.assert_close(head(u, v), before / 2.5)
