"""Refitting a pair head on frozen vectors."""

from __future__ import annotations

import numpy as np
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
