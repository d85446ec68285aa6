"""Fit the served pair heads (NLI, paraphrase) on the frozen, finished encoder.

During multi-task training the heads chase an encoder that keeps moving; once it is fixed, a
head fitted on its vectors for many epochs is markedly better. The sentence vectors are computed
once, then the head trains in seconds. A seeded tenth of the data is held out to pick the epoch,
so no evaluation set is used for selection.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.nn import functional as F

from models import data
from models.config import HeadFit
from models.encoder import PairClassifier

log = logging.getLogger(__name__)


def nli_pairs(root, with_snli: bool) -> list[tuple[str, str, int]]:
    """SICK train, and SNLI dev+test if asked (SICK trial stays held out for evaluation)."""
    pairs = [(p.a, p.b, p.entailment) for p in data.read_sick(root, "train")]
    if with_snli:
        pairs += [(p.a, p.b, p.label) for s in ("dev", "test") for p in data.read_snli(root, s)]
    return pairs


def fit_head(
    head: PairClassifier, u: np.ndarray, v: np.ndarray, labels: np.ndarray, fit: HeadFit, seed: int
) -> float:
    """Train `head` in place on (u, v) -> label; returns the best held-out accuracy."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    cut = int(len(order) * fit.held_out)
    valid, train = order[:cut], order[cut:]
    tu, tv, ty = (torch.from_numpy(x) for x in (u, v, labels.astype(np.int64)))
    optimizer = torch.optim.AdamW(head.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    best, best_state = -1.0, None
    torch.manual_seed(seed)
    for _ in range(fit.epochs):
        head.train()
        for start in range(0, len(train), fit.batch):
            rows = torch.from_numpy(train[start : start + fit.batch])
            loss = F.cross_entropy(head(tu[rows], tv[rows]), ty[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rng.shuffle(train)
        head.eval()
        with torch.no_grad():
            accuracy = (head(tu[valid], tv[valid]).argmax(1) == ty[valid]).float().mean().item()
        if accuracy > best:
            best, best_state = accuracy, {k: t.clone() for k, t in head.state_dict().items()}
    head.load_state_dict(best_state)
    return best


def fit_served_heads(embed, heads, root, fit: HeadFit, seed: int) -> dict[str, float]:
    """Replace `heads["nli"]` and `heads["paraphrase"]` with fresh heads fitted on vectors from
    `embed(sentences)`; fresh and seeded, so a rerun gives the same heads."""
    from models.tasks import paraphrase_pairs

    sources = {
        "nli": nli_pairs(root, fit.nli_with_snli),
        "paraphrase": paraphrase_pairs(root, seed),
    }
    scores = {}
    for name, pairs in sources.items():
        vectors = embed([p[0] for p in pairs] + [p[1] for p in pairs])
        u, v = vectors[: len(pairs)], vectors[len(pairs) :]
        labels = np.array([p[2] for p in pairs])
        old = heads[name]
        torch.manual_seed(seed)
        heads[name] = PairClassifier(
            u.shape[1], old.layers[-1].out_features, old.layers[1].out_features
        )
        scores[name] = round(100 * fit_head(heads[name], u, v, labels, fit, seed), 2)
        log.info("head %s: held-out accuracy %.2f", name, scores[name])
    return scores
