"""Fit the served pair heads (NLI, paraphrase) on the frozen, finished encoder, and calibrate them.

During multi-task training the heads chase an encoder that keeps moving; once it is fixed, a
head fitted on its vectors for many epochs is markedly better. The sentence vectors are computed
once, then the head trains in seconds. A seeded tenth of the data is held out to pick the epoch,
so no evaluation set is used for selection.

Calibration and the paraphrase threshold come from held-out folds of the training pairs, never
from pairs a head was fitted on: k heads, each fitted on k-1 folds, give every pair a logit from
a head that did not see it. A temperature fitted to those logits (least log-loss) is baked into
the served head's last layer, so that its softmax is a calibrated probability; the paraphrase
threshold is the one most accurate on the same held-out probabilities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar
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


def _logits(head: PairClassifier, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    head.eval()
    with torch.no_grad():
        return head(torch.from_numpy(u), torch.from_numpy(v)).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def out_of_fold_logits(
    new_head, u: np.ndarray, v: np.ndarray, labels: np.ndarray, fit: HeadFit, seed: int
) -> np.ndarray:
    """Each pair's logits from a head fitted on the other `fit.folds` - 1 folds."""
    folds = np.random.default_rng(seed + 1).permutation(len(labels)) % fit.folds
    out = np.zeros((len(labels), len(np.unique(labels))), dtype=np.float32)
    for k in range(fit.folds):
        train, held = folds != k, folds == k
        head = new_head()
        fit_head(head, u[train], v[train], labels[train], fit, seed + k)
        out[held] = _logits(head, u[held], v[held])
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the log-loss of softmax(logits / T) (temperature scaling)."""

    def log_loss(log_t: float) -> float:
        probabilities = softmax(logits / np.exp(log_t))
        return -float(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12).mean())

    return float(np.exp(minimize_scalar(log_loss, bounds=(-3, 3), method="bounded").x))


def calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top label, over equal-width confidence bins."""
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = edges == b
        if inside.any():
            gap = abs(
                float((predicted[inside] == labels[inside]).mean()) - confidence[inside].mean()
            )
            error += inside.mean() * gap
    return float(error)


def best_threshold(probability: np.ndarray, labels: np.ndarray) -> float:
    """The cut on P(positive) most accurate on these pairs (midway between two probabilities)."""
    order = np.sort(np.unique(probability))
    candidates = np.concatenate([[0.0], (order[1:] + order[:-1]) / 2, [1.0]])
    accuracy = [float(((probability >= c) == labels).mean()) for c in candidates]
    best = max(accuracy)
    # of equally good cuts, the one nearest 0.5: the least tuned to these pairs
    return float(
        min(
            (c for c, a in zip(candidates, accuracy, strict=True) if a == best),
            key=lambda c: abs(c - 0.5),
        )
    )


def bake_temperature(head: PairClassifier, temperature: float) -> None:
    """Divide the head's logits by `temperature`, in its last layer's weights."""
    last = head.layers[-1]
    with torch.no_grad():
        last.weight /= temperature
        last.bias /= temperature


@dataclass
class HeadReport:
    """What the held-out folds said about a served head."""

    folds_accuracy: float  # % of training pairs right, each by a head that did not see it
    temperature: float
    calibration_error_before: float
    calibration_error_after: float
    threshold: float | None = None  # paraphrase: the cut on P(paraphrase)


def fit_served_heads(embed, heads, root, fit: HeadFit, seed: int) -> dict[str, HeadReport]:
    """Replace `heads["nli"]` and `heads["paraphrase"]` with fresh heads fitted on vectors from
    `embed(sentences)`, calibrated on held-out folds; fresh and seeded, so a rerun gives the
    same heads."""
    from models.tasks import paraphrase_pairs

    sources = {
        "nli": nli_pairs(root, fit.nli_with_snli),
        "paraphrase": paraphrase_pairs(root, seed, with_ppdb=fit.paraphrase_with_ppdb),
    }
    reports = {}
    for name, pairs in sources.items():
        vectors = embed([p[0] for p in pairs] + [p[1] for p in pairs])
        u, v = vectors[: len(pairs)], vectors[len(pairs) :]
        labels = np.array([p[2] for p in pairs], dtype=np.int64)
        old = heads[name]

        def new_head(old=old, dim=u.shape[1]) -> PairClassifier:
            torch.manual_seed(seed)
            return PairClassifier(
                dim, old.layers[-1].out_features, fit.hidden or old.layers[1].out_features
            )

        held_out = out_of_fold_logits(new_head, u, v, labels, fit, seed)
        temperature = fit_temperature(held_out, labels)
        calibrated = softmax(held_out / temperature)
        reports[name] = HeadReport(
            folds_accuracy=round(100 * float((held_out.argmax(1) == labels).mean()), 2),
            temperature=round(temperature, 4),
            calibration_error_before=round(calibration_error(softmax(held_out), labels), 4),
            calibration_error_after=round(calibration_error(calibrated, labels), 4),
            threshold=round(best_threshold(calibrated[:, 1], labels), 4)
            if name == "paraphrase"
            else None,
        )
        heads[name] = new_head()
        fit_head(heads[name], u, v, labels, fit, seed)
        bake_temperature(heads[name], temperature)
        log.info("head %s: %s", name, reports[name])
    return reports
