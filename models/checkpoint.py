"""Model building and training checkpoints: what training writes and what export reads back.

A checkpoint carries the model, its heads, the optimizer, the config it was trained with and
the training seconds so far; `build_model` makes the untrained model of a config.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.config import TrainConfig
from models.encoder import GensenEncoder, PairClassifier
from models.tasks import HEAD_CLASSES, NEXT_HEAD, TRANSFER_HEAD, NextSentenceHead
from models.teacher import TEACHER_DIM


def build_model(config: TrainConfig) -> tuple[GensenEncoder, nn.ModuleDict]:
    """The encoder and pair heads of `config`, initialised from its seed."""
    torch.manual_seed(config.seed)
    encoder = GensenEncoder(config.encoder)
    nn.init.normal_(encoder.src_embedding.weight, std=0.1)
    dim = config.encoder.output_dim
    heads = nn.ModuleDict(
        {n: PairClassifier(dim, c, config.head_hidden) for n, c in HEAD_CLASSES.items()}
    )
    if config.transfer_weight:  # training only: the bundle never serves it
        reads = 2 * config.encoder.hidden_dim if config.transfer_reads == "features" else dim
        heads[TRANSFER_HEAD] = nn.Linear(reads, TEACHER_DIM)
    if any(NEXT_HEAD in phase.weights for phase in config.phases):  # training only, too
        heads[NEXT_HEAD] = NextSentenceHead(dim)
    return encoder, heads


def save_checkpoint(
    path: Path, step: int, encoder, heads, optimizer, config: TrainConfig, elapsed_s: float
) -> None:
    """Atomically write model, heads, optimizer, config and training seconds so far."""
    state = {
        "step": step,
        "elapsed_s": elapsed_s,
        "encoder": encoder.state_dict(),
        "heads": heads.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": config.to_dict(),
    }
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def load_weights(path: Path, encoder, heads: nn.ModuleDict) -> list[str]:
    """Start from a checkpoint's weights: the whole encoder, and each head that the checkpoint
    holds with the same shapes (a head the new config adds or reshapes stays as built).
    Returns the names of the heads left as built."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    encoder.load_state_dict(state["encoder"])
    fresh = []
    for name, head in heads.items():
        saved = {
            k.removeprefix(f"{name}."): v
            for k, v in state["heads"].items()
            if k.startswith(f"{name}.")
        }
        own = head.state_dict()
        if saved.keys() == own.keys() and all(own[k].shape == v.shape for k, v in saved.items()):
            head.load_state_dict(saved)
        else:
            fresh.append(name)
    return sorted(fresh)


def load_checkpoint(path: Path, encoder, heads, optimizer=None) -> tuple[int, float]:
    """Restore in place; returns (steps done, training seconds so far)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    encoder.load_state_dict(state["encoder"])
    heads.load_state_dict(state["heads"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), float(state.get("elapsed_s", 0.0))
