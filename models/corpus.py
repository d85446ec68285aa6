"""The text for distillation and vocabulary: training sentences and passages, never evaluation ones.

Evaluation sentences (STS-B dev, SICK trial, the MRPC dev fifth, and the MR/SUBJ duplicates among
the NLTK corpora) are kept out so that dev scores measure generalisation.

Unlabeled text is sampled in blocks of consecutive sentences (the corpora are in document order),
so that the same sample also gives passages: runs of sentences embedded as one text, which teach
the encoder inputs far longer than a sentence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from models import data

BLOCK_SENTENCES = 8  # consecutive unlabeled sentences drawn together; a passage is a block's prefix


@dataclass
class Corpus:
    sentences: list[str]  # deduplicated: labeled training sentences, then unlabeled ones
    passages: list[list[int]]  # each a run of consecutive sentences, as indices into `sentences`


def stsb_dev_sentences(root: Path) -> set[str]:
    """The sentences of STS-B dev, the main measure of generalisation."""
    return {s for p in data.read_stsb(root, "dev") for s in (p.a, p.b)}


def evaluation_sentences(root: Path) -> set[str]:
    """Sentences of the held-out dev sets that training must not see."""
    sick = {s for p in data.read_sick(root, "trial") for s in (p.a, p.b)}
    mrpc = {s for p in data.mrpc_split(root)[1] for s in (p.a, p.b)}
    return stsb_dev_sentences(root) | sick | mrpc


def labeled_training_sentences(root: Path) -> list[str]:
    """Both sides of every labeled training pair (NLI, STS, paraphrase)."""
    pairs = [*data.read_snli(root, "dev"), *data.read_snli(root, "test"), *data.read_rte(root)]
    pairs += [*data.read_stsb(root, "train"), *data.read_sts12(root), *data.mrpc_split(root)[0]]
    pairs += data.read_sick(root, "train")
    return [s for p in pairs for s in (p.a, p.b)]


def unlabeled_blocks(
    root: Path, held: set[str], min_words: int = 3, max_words: int = 40
) -> list[list[str]]:
    """Blocks of up to BLOCK_SENTENCES consecutive unlabeled sentences of one corpus, in document
    order; a block ends where a sentence is held out or out of the length range."""
    blocks: list[list[str]] = []
    block: list[str] = []
    previous = None
    for name, sentence in data.read_unlabeled(root):
        usable = min_words <= len(sentence.split()) <= max_words and sentence not in held
        if block and (name != previous or not usable or len(block) == BLOCK_SENTENCES):
            blocks.append(block)
            block = []
        previous = name
        if usable:
            block.append(sentence)
    if block:
        blocks.append(block)
    return blocks


def training_corpus(
    root: Path, max_unlabeled: int, seed: int, min_words: int = 3, max_words: int = 40
) -> Corpus:
    """Labeled sentences plus seeded blocks of unlabeled ones (about `max_unlabeled` sentences),
    evaluation excluded; every block of two or more sentences is also a passage."""
    held = evaluation_sentences(root)
    index = dict.fromkeys(s for s in labeled_training_sentences(root) if s not in held)
    blocks = unlabeled_blocks(root, held, min_words, max_words)
    random.Random(seed).shuffle(blocks)
    passages, taken = [], 0
    for block in blocks:
        if taken >= max_unlabeled:
            break
        taken += len(block)
        index.update(dict.fromkeys(block))
        if len(block) > 1:
            passages.append(block)
    position = {s: i for i, s in enumerate(index)}
    return Corpus(list(index), [[position[s] for s in block] for block in passages])


def training_sentences(
    root: Path, max_unlabeled: int, seed: int, min_words: int = 3, max_words: int = 40
) -> list[str]:
    """The deduplicated sentences of `training_corpus`."""
    return training_corpus(root, max_unlabeled, seed, min_words, max_words).sentences
