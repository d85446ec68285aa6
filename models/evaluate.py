"""Evaluate a bundle as exported, through ONNX Runtime (not torch).

    python -m models.evaluate models/gensen-base [--quick] [--no-write]

STS-B dev Spearman of cosine (all pairs, and pairs whose sentences training never saw); SICK trial
relatedness (Pearson of cosine) and entailment accuracy through nli.onnx (all pairs, and unseen
ones); MRPC dev (the held-out fifth of MRPC train) accuracy/F1 through paraphrase.onnx at the
card's threshold; the heads' calibration error; SentEval-style transfer with logistic regression. The table is printed beside the
GenSen paper's numbers and written into the bundle's model.json under "evaluation".
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from tokenizers import Tokenizer

from models import corpus, data
from models.encoder import PAD_ID
from models.vocabulary import encode, pad_batch

# GenSen (Subramanian et al., 2018), best multi-task model, as DESIGN.md quotes it.
PAPER = {"SICK-R": 0.888, "SICK-E": 87.8, "STS-B": 78.6, "MRPC acc": 78.6, "MRPC F1": 84.4}
SPLIT = "dev (STS-B dev, SICK trial, MRPC dev: a fixed seeded fifth of MRPC train)"


class Model(Protocol):
    """What the metrics need: sentence vectors and the two pair heads' logits."""

    paraphrase_threshold: float

    def embed(self, sentences: list[str]) -> np.ndarray: ...
    def head(self, name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray: ...


def batched_embed(
    run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokenizer: Tokenizer,
    max_tokens: int,
    sentences: list[str],
    batch: int = 128,
) -> np.ndarray:
    """Embed in length-sorted batches with `run(ids, lengths)`, returned in input order."""
    rows = encode(tokenizer, sentences, max_tokens)
    order = np.argsort([len(r) for r in rows], kind="stable")
    out: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        ids, lengths = pad_batch([rows[i] for i in chunk], PAD_ID)
        for i, vector in zip(chunk, run(ids, lengths), strict=True):
            out[i] = vector
    return np.stack(out).astype(np.float32)


class OnnxBundle:
    """A bundle loaded into ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.card = json.loads((path / "model.json").read_text())
        files = self.card["files"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        sessions = {
            k: ort.InferenceSession(str(path / f), options, providers=providers)
            for k, f in files.items()
            if k != "tokenizer"
        }
        self.encoder = sessions["encoder"]
        self.heads = {name: sessions[name] for name in ("nli", "paraphrase")}
        self.tokenizer = Tokenizer.from_file(str(path / files["tokenizer"]))
        self.paraphrase_threshold = float(self.card["paraphrase_threshold"])
        self.encoder_outputs = [o.name for o in self.encoder.get_outputs()]

    def embed(self, sentences: list[str], output: str = "embeddings") -> np.ndarray:
        """The encoder's `output` for each sentence: the served `embeddings`, or the pooled
        `features` they are projected from (in bundles exported with them)."""
        if output not in self.encoder_outputs:
            raise ValueError(
                f"the encoder has no {output!r} output (outputs: {self.encoder_outputs})"
            )

        def run(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            return self.encoder.run([output], {"input_ids": ids, "lengths": lengths})[0]

        return batched_embed(run, self.tokenizer, self.card["max_tokens"], sentences)

    def head(self, name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.heads[name].run(None, {"u": u, "v": v})[0]


def _cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-12)


def _pair_vectors(model: Model, pairs) -> tuple[np.ndarray, np.ndarray]:
    vectors = model.embed([p.a for p in pairs] + [p.b for p in pairs])
    return vectors[: len(pairs)], vectors[len(pairs) :]


def stsb_dev(model: Model, root: Path, seen: frozenset[str] | None = None) -> dict[str, float]:
    """Spearman x100 of cosine on STS-B dev; with `seen`, also on pairs of unseen sentences."""
    pairs = data.read_stsb(root, "dev")
    u, v = _pair_vectors(model, pairs)
    cos, gold = _cosine(u, v), np.array([p.label for p in pairs])
    scores = {"STS-B dev": 100 * spearmanr(cos, gold).statistic}
    if seen is not None:
        fresh = np.array([p.a not in seen and p.b not in seen for p in pairs])
        scores["STS-B dev unseen"] = 100 * spearmanr(cos[fresh], gold[fresh]).statistic
        scores["STS-B dev unseen pairs"] = int(fresh.sum())
    return scores


def sick_trial(model: Model, root: Path, seen: frozenset[str] | None = None) -> dict[str, float]:
    """SICK trial: Pearson of cosine with relatedness (x100), entailment accuracy (%) by the head
    and its calibration error; with `seen`, accuracy on pairs of unseen sentences too."""
    from models.heads import calibration_error, softmax

    pairs = data.read_sick(root, "trial")
    u, v = _pair_vectors(model, pairs)
    probabilities = softmax(model.head("nli", u, v))
    labels = np.array([p.entailment for p in pairs])
    right = probabilities.argmax(1) == labels
    scores = {
        "SICK-R trial": 100 * pearsonr(_cosine(u, v), [p.relatedness for p in pairs]).statistic,
        "SICK-E trial": 100 * float(np.mean(right)),
        "SICK-E trial ECE": calibration_error(probabilities, labels),
    }
    if seen is not None:
        fresh = np.array([p.a not in seen and p.b not in seen for p in pairs])
        scores["SICK-E trial unseen"] = 100 * float(np.mean(right[fresh]))
        scores["SICK-E trial unseen pairs"] = int(fresh.sum())
    return scores


def mrpc_dev(model: Model, root: Path) -> dict[str, float]:
    """MRPC dev (a fixed fifth of MRPC train that no training saw) through the paraphrase head,
    at the model's threshold: accuracy, F1 (%) and the head's calibration error."""
    from models.heads import calibration_error, softmax

    pairs = data.mrpc_split(root)[1]
    u, v = _pair_vectors(model, pairs)
    probabilities = softmax(model.head("paraphrase", u, v))
    labels = np.array([p.label for p in pairs])
    predicted = (probabilities[:, 1] >= model.paraphrase_threshold).astype(int)
    return {
        "MRPC dev acc": 100 * float(np.mean(predicted == labels)),
        "MRPC dev F1": 100 * f1_score(labels, predicted),
        "MRPC dev ECE": calibration_error(probabilities, labels),
    }


def _logistic(
    features: np.ndarray,
    labels: np.ndarray,
    test: tuple[np.ndarray, np.ndarray] | None,
    seed: int = 0,
) -> np.ndarray:
    """Predictions of a logistic regression: 10-fold cross-validated, or train -> test."""
    classifier = LogisticRegression(max_iter=1000, C=1.0)
    if test is None:
        folds = StratifiedKFold(10, shuffle=True, random_state=seed)
        return cross_val_predict(classifier, features, labels, cv=folds)
    return classifier.fit(features, labels).predict(test[0])


def transfer(
    embed: Callable[[list[str]], np.ndarray],
    root: Path,
    tasks: tuple[str, ...] = data.TRANSFER_TASKS,
) -> dict[str, float]:
    """SentEval-style classification accuracy (%) per task, on the vectors `embed` gives."""
    scores = {}
    for task in tasks:
        split = data.read_transfer(root, task)
        train_x = embed([s for s, _ in split.train])
        train_y = np.array([y for _, y in split.train])
        test = None
        if split.test:
            test = (embed([s for s, _ in split.test]), np.array([y for _, y in split.test]))
        predicted = _logistic(train_x, train_y, test)
        truth = test[1] if test else train_y
        scores[task] = 100 * float(np.mean(predicted == truth))
    return scores


@functools.cache
def seen_sentences(root: Path) -> frozenset[str]:
    """Every sentence the training could have seen (labeled sets and unlabeled text)."""
    unlabeled = (s for _, s in data.read_unlabeled(root))
    return frozenset(corpus.labeled_training_sentences(root)).union(unlabeled)


def evaluate(model: Model, root: Path, quick: bool = False) -> dict[str, float]:
    scores = {
        **stsb_dev(model, root, seen_sentences(root)),
        **sick_trial(model, root, seen_sentences(root)),
        **mrpc_dev(model, root),
    }
    if not quick:
        scores.update(transfer(model.embed, root))
    return {k: _rounded(k, v) for k, v in scores.items()}


def _rounded(name: str, value: float | int) -> float | int:
    if isinstance(value, int):
        return value
    return round(float(value), 4 if name.endswith("ECE") else 2)


def format_table(scores: dict[str, float]) -> str:
    lines = [f"{'metric':<24}{'this bundle':>12}{'GenSen paper':>14}", "-" * 50]
    for name, value in scores.items():
        paper_key = name.replace(" trial", "").replace(" dev", "")
        if "unseen" in name or "ECE" in name:
            paper_key = ""
        paper = PAPER.get(paper_key)
        if paper is not None and paper < 1:
            paper *= 100
        lines.append(f"{name:<24}{value:>12}{paper if paper is not None else '':>14}")
    lines.append(
        "(paper: test splits, not these dev splits; SICK-R there is a trained regressor, here cosine)"
    )
    return "\n".join(lines)


class TorchModel:
    """The torch encoder and heads behind the same `Model` interface (eval mode, no grad)."""

    def __init__(
        self,
        encoder,
        heads,
        tokenizer: Tokenizer,
        max_tokens: int,
        paraphrase_threshold: float = 0.5,
    ) -> None:
        self.encoder, self.heads, self.tokenizer = encoder, heads, tokenizer
        self.max_tokens, self.paraphrase_threshold = max_tokens, paraphrase_threshold

    def embed(self, sentences: list[str]) -> np.ndarray:
        import torch

        def run(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            return self.encoder(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()

        self.encoder.eval()
        with torch.no_grad():
            return batched_embed(run, self.tokenizer, self.max_tokens, sentences)

    def head(self, name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        import torch

        self.heads.eval()
        with torch.no_grad():
            return self.heads[name](torch.from_numpy(u), torch.from_numpy(v)).numpy()


def dev_scores_torch(
    encoder, heads, tokenizer: Tokenizer, root: Path, max_tokens: int
) -> dict[str, float]:
    """The quick dev metrics during training, on the torch model."""
    model = TorchModel(encoder, heads, tokenizer, max_tokens)
    scores = {**stsb_dev(model, root, seen_sentences(root)), **sick_trial(model, root)}
    return {k: _rounded(k, v) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="skip the transfer tasks")
    parser.add_argument(
        "--no-write", action="store_true", help="do not write the results into model.json"
    )
    args = parser.parse_args()
    scores = evaluate(OnnxBundle(args.bundle), data.data_root(args.data), args.quick)
    print(format_table(scores))
    if not args.no_write:
        card_path = args.bundle / "model.json"
        card = json.loads(card_path.read_text())
        card["evaluation"] = {
            "split": SPLIT,
            "scores": scores,
            "paper": PAPER,
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
