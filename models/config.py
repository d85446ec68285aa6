"""Typed training configuration, read from a JSON file (models/configs/*.json).

A checkpoint carries the config it was trained with, so a run resumes and exports without the
file that started it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models.encoder import EncoderConfig


@dataclass
class Phase:
    """A stretch of training: a number of steps, a task mixture, a learning-rate range."""

    name: str
    steps: int
    weights: dict[str, float]  # task name -> sampling weight; see models.tasks.TASKS
    lr: float = 2e-3  # peak, decayed by a cosine to lr_final over the phase
    lr_final: float = 2e-4
    warmup_steps: int = 100


@dataclass
class HeadFit:
    """Refitting the served heads on the finished encoder (models.heads)."""

    # how a tanh head trains (a linear one is solved to convergence: models.heads.fit_linear_head)
    epochs: int = 40
    lr: float = 1e-3
    batch: int = 128
    weight_decay: float = 1e-4
    held_out: float = 0.1  # fraction kept aside to pick the best epoch
    # SICK train alone makes the better served NLI head: with SNLI added, SICK trial fell from
    # 84 to 78 (SNLI's pairs already shaped the encoder in multi-task training).
    nli_with_snli: bool = False
    paraphrase_with_ppdb: bool = True  # PPDB synonym pairs beside MRPC's
    folds: int = 5  # held-out folds for the shape, the temperature and the paraphrase threshold
    # The served head's shapes to try: linear heads of these L2 strengths and tanh heads of
    # these hidden units (both empty: a tanh head the size of the multi-task one). The simplest
    # within one standard error of the best on held-out folds is served (models.heads).
    linear_l2: list[float] = field(default_factory=list)
    hidden: list[int] = field(default_factory=list)


@dataclass
class TrainConfig:
    name: str = "gensen-base"
    version: str = "1.0.0"
    seed: int = 0
    # data and vocabulary
    max_unlabeled: int = 200_000  # unlabeled sentences sampled for distillation
    vocab_size: int = 40_000
    lowercase: bool = True
    max_tokens: int = 64  # the longest input trained and exported; the service windows longer ones
    teachers: list[str] = field(default_factory=lambda: ["paraphrase-MiniLM-L3-v2"])
    glove_init: bool = True  # GloVe 6B-50d in the first 50 embedding dimensions
    # A general-purpose target beside the paraphrase one: this teacher's vectors (standardised)
    # are regressed from the output vector through a linear head of their own, on the distill
    # task's sentences, with this weight beside its cosine loss (0: not at all).
    transfer_teacher: str | None = None
    transfer_weight: float = 0.0
    # What that head reads: "output", the served vector itself (what a classifier on the
    # served vectors needs must be in it), or "features", the pooled BiGRU states before the
    # projection (the encoder learns the target, the projection stays trained for similarity).
    transfer_reads: str = "output"
    # model
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(vocab_size=40_000))
    head_hidden: int = 512
    # optimisation
    sentence_batch: int = 128  # sentences per distillation step
    pair_batch: int = 64  # pairs per pair-task step
    passage_batch: int = 32  # passages (runs of consecutive sentences) per passage step
    grad_clip: float = 1.0
    phases: list[Phase] = field(default_factory=list)
    head_fit: HeadFit | None = None  # None: export the heads as multi-task training left them
    # bookkeeping
    threads: int = 2
    eval_every: int = 1000
    checkpoint_every: int = 250
    run_dir: str = "runs/gensen-base"  # checkpoints and caches; never committed
    bundle_dir: str = "models/gensen-base"

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        raw = dict(raw)
        raw["encoder"] = EncoderConfig(
            **raw.get("encoder", {"vocab_size": raw.get("vocab_size", 40_000)})
        )
        raw["phases"] = [Phase(**p) for p in raw.get("phases", [])]
        if raw.get("head_fit") is not None:
            raw["head_fit"] = HeadFit(**raw["head_fit"])
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """A config file; one that names a `base` (a config file beside it) holds only the
        top-level keys where it differs from that base."""
        return cls.from_dict(_read_config(Path(path)))


def _read_config(path: Path) -> dict:
    raw = json.loads(path.read_text())
    base = raw.pop("base", None)
    return {**_read_config(path.parent / base), **raw} if base else raw
