"""The sentence corpus for distillation and vocabulary: training sentences, never evaluation ones.

Evaluation sentences (STS-B dev, SICK trial, and the MR/SUBJ duplicates among the NLTK corpora)
are kept out so that dev scores measure generalisation.
"""

from __future__ import annotations

import random
from pathlib import Path

from models import data


def stsb_dev_sentences(root: Path) -> set[str]:
    """The sentences of STS-B dev, the main measure of generalisation."""
    return {s for p in data.read_stsb(root, "dev") for s in (p.a, p.b)}


def evaluation_sentences(root: Path) -> set[str]:
    """Sentences of the held-out dev sets that training must not see."""
    return stsb_dev_sentences(root) | {s for p in data.read_sick(root, "trial") for s in (p.a, p.b)}


def labeled_training_sentences(root: Path) -> list[str]:
    """Both sides of every labeled training pair (NLI, STS, paraphrase)."""
    pairs = [*data.read_snli(root, "dev"), *data.read_snli(root, "test"), *data.read_rte(root)]
    pairs += [*data.read_stsb(root, "train"), *data.read_sts12(root), *data.read_mrpc(root)]
    pairs += data.read_sick(root, "train")
    return [s for p in pairs for s in (p.a, p.b)]


def training_sentences(
    root: Path, max_unlabeled: int, seed: int, min_words: int = 3, max_words: int = 40
) -> list[str]:
    """Deduplicated labeled sentences plus a seeded sample of unlabeled ones, evaluation excluded."""
    held = evaluation_sentences(root)
    keep = dict.fromkeys(s for s in labeled_training_sentences(root) if s not in held)
    unlabeled = [
        s
        for _, s in data.read_unlabeled(root)
        if min_words <= len(s.split()) <= max_words and s not in held and s not in keep
    ]
    unlabeled = list(dict.fromkeys(unlabeled))
    random.Random(seed).shuffle(unlabeled)
    keep.update(dict.fromkeys(unlabeled[:max_unlabeled]))
    return list(keep)
