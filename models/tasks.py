"""GenSen's training tasks: one shared encoder, each task with its own head and loss.

Every task pre-tokenises its examples once and serves length-bucketed batches in a seeded order,
so that a training run is a pure function of its seed and can resume at any step.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from torch.nn import functional as F

from models import corpus, data
from models.encoder import PAD_ID, GensenEncoder
from models.vocabulary import encode, pad_batch

Batch = dict[str, torch.Tensor]


def _tensors(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lengths = pad_batch(rows, PAD_ID)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: random.Random, chunk: int = 50
) -> list[np.ndarray]:
    """Shuffle, sort by length within chunks of `chunk` batches, then shuffle the batches."""
    order = np.array(rng.sample(range(len(lengths)), len(lengths)), dtype=np.int64)
    batches = []
    span = batch_size * chunk
    for start in range(0, len(order), span):
        part = order[start : start + span]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


class Task:
    """Base: examples as token ids, batches by length; subclasses define `make_batch` and `loss`."""

    name: str
    batch_size: int
    lengths: np.ndarray

    def batches(self, seed: int, epoch: int) -> list[np.ndarray]:
        return bucketed_batches(
            self.lengths, self.batch_size, random.Random(f"{seed}/{self.name}/{epoch}")
        )

    def make_batch(self, rows: np.ndarray) -> Batch:
        raise NotImplementedError

    def loss(self, encoder: GensenEncoder, heads: nn.ModuleDict, batch: Batch) -> torch.Tensor:
        raise NotImplementedError


class DistillationTask(Task):
    """Match the teacher's vector of a text: loss 1 - cosine(student, teacher).

    With `transfer` (a second, general-purpose target per text) and its `transfer_weight`,
    the student's vector must also predict that target through the TRANSFER_HEAD (a linear
    map; mean squared error): the vector keeps what the paraphrase target leaves out, such as
    question type and sentiment, in directions that cosine similarity weighs little. With
    `transfer_reads="features"` the head reads the pooled features before the projection.
    """

    def __init__(
        self,
        ids: list[list[int]],
        teacher: np.ndarray,
        batch_size: int,
        name: str = "distill",
        transfer: np.ndarray | None = None,
        transfer_weight: float = 0.0,
        transfer_reads: str = "output",
    ) -> None:
        if transfer_reads not in TRANSFER_READS:
            raise ValueError(f"transfer_reads must be one of {TRANSFER_READS}: {transfer_reads!r}")
        self.ids, self.teacher, self.batch_size, self.name = ids, teacher, batch_size, name
        self.transfer = transfer if transfer_weight else None
        self.transfer_weight, self.transfer_reads = transfer_weight, transfer_reads
        self.lengths = np.array([len(r) for r in ids])

    def make_batch(self, rows: np.ndarray) -> Batch:
        ids, lengths = _tensors([self.ids[i] for i in rows])
        batch = {"ids": ids, "lengths": lengths, "target": torch.from_numpy(self.teacher[rows])}
        if self.transfer is not None:
            batch["transfer"] = torch.from_numpy(self.transfer[rows])
        return batch

    def loss(self, encoder, heads, batch):
        features, student = encoder.encode(batch["ids"], batch["lengths"])
        loss = (1 - F.cosine_similarity(student, batch["target"])).mean()
        if "transfer" in batch:
            read = features if self.transfer_reads == "features" else student
            predicted = heads[TRANSFER_HEAD](read)
            loss = loss + self.transfer_weight * F.mse_loss(predicted, batch["transfer"])
        return loss


class PairTask(Task):
    """Sentence pairs encoded in one forward pass (both sides stacked)."""

    def __init__(
        self, name: str, a: list[list[int]], b: list[list[int]], labels: np.ndarray, batch_size: int
    ) -> None:
        self.name, self.a, self.b, self.labels, self.batch_size = name, a, b, labels, batch_size
        self.lengths = np.array([max(len(x), len(y)) for x, y in zip(a, b, strict=True)])

    def make_batch(self, rows: np.ndarray) -> Batch:
        ids, lengths = _tensors([self.a[i] for i in rows] + [self.b[i] for i in rows])
        return {"ids": ids, "lengths": lengths, "labels": torch.from_numpy(self.labels[rows])}

    def encode_pair(
        self, encoder: GensenEncoder, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = encoder(batch["ids"], batch["lengths"])
        return vectors.chunk(2)


class SimilarityTask(PairTask):
    """STS regression: cosine(u, v) against the gold score scaled to [0, 1]."""

    def loss(self, encoder, heads, batch):
        u, v = self.encode_pair(encoder, batch)
        return F.mse_loss(F.cosine_similarity(u, v), batch["labels"].float())


class ClassificationTask(PairTask):
    """NLI, RTE or paraphrase: the task's head over [u, v, |u-v|, u*v], cross-entropy."""

    def loss(self, encoder, heads, batch):
        u, v = self.encode_pair(encoder, batch)
        return F.cross_entropy(heads[self.name](u, v), batch["labels"].long())


class NextSentenceHead(nn.Module):
    """Quick-thought's two views of a sentence (Logeswaran and Lee, 2018): one linear map for
    a sentence, another for its candidate successors, so that "follows" need not be symmetric."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.sentence = nn.Linear(dim, dim)
        self.successor = nn.Linear(dim, dim)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scores [n, n]: sentence i (of `u`) against each candidate j (of `v`)."""
        a = F.normalize(self.sentence(u), dim=-1)
        b = F.normalize(self.successor(v), dim=-1)
        return a @ b.T / NEXT_TEMPERATURE


class NextSentenceTask(PairTask):
    """Quick-thought on the ordered unlabeled text: tell the sentence that really follows each
    sentence from the batch's other successors (and each successor's true predecessor from the
    batch's other sentences), through the NEXT_HEAD, by cross-entropy. What tells sentences in
    sequence apart (topic, register, question against answer) must then be in the vector; the
    head keeps the comparison itself out of it."""

    def loss(self, encoder, heads, batch):
        u, v = self.encode_pair(encoder, batch)
        scores = heads[NEXT_HEAD](u, v)
        truth = torch.arange(len(u), device=scores.device)
        return (F.cross_entropy(scores, truth) + F.cross_entropy(scores.T, truth)) / 2


def successor_pairs(
    sentence_ids: list[list[int]], passages: list[list[int]]
) -> tuple[list[list[int]], list[list[int]]]:
    """Each sentence of a passage with the one after it (the corpus keeps document order)."""
    follows = {(a, b) for passage in passages for a, b in itertools.pairwise(passage)}
    pairs = sorted(follows)
    a = [sentence_ids[i] for i, _ in pairs]
    b = [sentence_ids[j] for _, j in pairs]
    return a, b


HEAD_CLASSES = {"nli": 3, "paraphrase": 2, "rte": 2}
TRANSFER_HEAD = "transfer"  # the distill task's linear head to the general-purpose target
TRANSFER_READS = ("output", "features")  # what that head reads (TrainConfig.transfer_reads)
NEXT_HEAD = "next"  # the next-sentence task's two linear views
NEXT_TEMPERATURE = 0.05  # cosine scores over this, as in contrastive sentence objectives


def passage_examples(
    sentence_ids: list[list[int]],
    targets: np.ndarray,
    passages: list[list[int]],
    max_tokens: int,
    seed: int,
) -> tuple[list[list[int]], np.ndarray]:
    """Passages as one token sequence each, with the mean of their sentences' unit targets.

    Each passage keeps a seeded prefix of two or more of its sentences, cut to whole sentences
    within `max_tokens`, so that lengths spread from two sentences to the model's limit.
    """
    rng = random.Random(f"{seed}/passages")
    units = targets / np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
    ids, vectors = [], []
    for passage in passages:
        chosen: list[int] = []
        tokens: list[int] = []
        for i in passage[: rng.randint(2, len(passage))]:
            if len(tokens) + len(sentence_ids[i]) > max_tokens:
                break
            chosen.append(i)
            tokens += sentence_ids[i]
        if len(chosen) > 1:
            ids.append(tokens)
            mean = units[chosen].mean(0)
            vectors.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return ids, np.array(vectors, dtype=np.float32).reshape(len(ids), targets.shape[1])


@dataclass
class TaskData:
    """What the tasks are built from: the data root, the tokenizer, the teacher's vectors."""

    root: Path
    tokenizer: Tokenizer
    max_tokens: int
    sentences: list[str]
    teacher: np.ndarray | None
    seed: int = 0
    passages: list[list[int]] | None = None  # runs of consecutive sentences (indices)
    transfer: np.ndarray | None = None  # the general-purpose target of each sentence
    transfer_weight: float = 0.0
    transfer_reads: str = "output"


def _pair_task(
    cls: type[PairTask],
    name: str,
    pairs: list[tuple[str, str, float]],
    d: TaskData,
    batch: int,
    held: set[str],
) -> PairTask:
    pairs = without_sentences(pairs, held)
    a = encode(d.tokenizer, [p[0] for p in pairs], d.max_tokens)
    b = encode(d.tokenizer, [p[1] for p in pairs], d.max_tokens)
    return cls(name, a, b, np.array([p[2] for p in pairs], dtype=np.float32), batch)


def without_sentences(
    pairs: list[tuple[str, str, float]], held: set[str]
) -> list[tuple[str, str, float]]:
    """The pairs in which neither sentence is in `held`."""
    return [p for p in pairs if p[0] not in held and p[1] not in held]


def paraphrase_pairs(root: Path, seed: int, with_ppdb: bool = True) -> list[tuple[str, str, float]]:
    """MRPC train less its dev fifth, plus PPDB synonym pairs with as many shuffled negatives."""
    pairs = [(p.a, p.b, p.label) for p in data.mrpc_split(root)[0]]
    if not with_ppdb:
        return pairs
    rng = random.Random(seed)
    ppdb = rng.sample(data.read_ppdb(root), 2000)
    shuffled = rng.sample([b for _, b in ppdb], len(ppdb))
    pairs += [(a, b, 1) for a, b in ppdb] + [
        (a, s, 0) for (a, _), s in zip(ppdb, shuffled, strict=True)
    ]
    return pairs


def build_tasks(
    names: set[str], d: TaskData, sentence_batch: int, pair_batch: int, passage_batch: int = 32
) -> dict[str, Task]:
    """The named tasks (see the config's phase weights), built from the shared data folder.

    Pairs with an STS-B dev sentence are left out of every labeled task: STS 2012 train holds
    255 of STS-B dev's pairs with their scores and STS-B train 11 more, and pairs that share a
    sentence with dev would teach the encoder those very sentences. SICK train shares sentences
    with SICK trial by SICK's design (never a pair), and is kept whole.
    """
    root, tasks, held = d.root, {}, corpus.stsb_dev_sentences(d.root)
    if names & {"distill", "passage", "next"}:
        sentence_ids = encode(d.tokenizer, d.sentences, d.max_tokens)
    if "distill" in names:
        tasks["distill"] = DistillationTask(
            sentence_ids,
            d.teacher,
            sentence_batch,
            transfer=d.transfer,
            transfer_weight=d.transfer_weight,
            transfer_reads=d.transfer_reads,
        )
    if "passage" in names:
        ids, targets = passage_examples(
            sentence_ids, d.teacher, d.passages or [], d.max_tokens, d.seed
        )
        tasks["passage"] = DistillationTask(ids, targets, passage_batch, name="passage")
    if "next" in names:
        a, b = successor_pairs(sentence_ids, d.passages or [])
        labels = np.zeros(len(a), dtype=np.float32)  # the truth is each row's own successor
        tasks["next"] = NextSentenceTask("next", a, b, labels, sentence_batch // 2)
    if "sts" in names:
        pairs = [
            (p.a, p.b, p.label / 5)
            for p in [*data.read_stsb(root, "train"), *data.read_sts12(root)]
        ]
        pairs += [(p.a, p.b, (p.relatedness - 1) / 4) for p in data.read_sick(root, "train")]
        tasks["sts"] = _pair_task(SimilarityTask, "sts", pairs, d, pair_batch, held)
    if "nli" in names:
        pairs = [(p.a, p.b, p.label) for s in ("dev", "test") for p in data.read_snli(root, s)]
        pairs += [(p.a, p.b, p.entailment) for p in data.read_sick(root, "train")]
        tasks["nli"] = _pair_task(ClassificationTask, "nli", pairs, d, pair_batch, held)
    if "rte" in names:
        tasks["rte"] = _pair_task(
            ClassificationTask,
            "rte",
            [(p.a, p.b, p.label) for p in data.read_rte(root)],
            d,
            pair_batch,
            held,
        )
    if "paraphrase" in names:
        tasks["paraphrase"] = _pair_task(
            ClassificationTask,
            "paraphrase",
            paraphrase_pairs(d.root, d.seed),
            d,
            pair_batch,
            held,
        )
    unknown = names - tasks.keys()
    if unknown:
        raise ValueError(
            f"unknown tasks {sorted(unknown)}; known: distill, passage, next, sts, nli, rte, "
            "paraphrase"
        )
    return tasks
