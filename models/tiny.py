"""A tiny bundle with a randomly initialised GenSen encoder (dim 32, a vocabulary of 200), built
by the real training and export code: the tests' model, and the benchmarks' encoder that costs
next to nothing (what is left is the service's own cost). Needs torch.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = [
    "a",
    "the",
    "man",
    "woman",
    "child",
    "dog",
    "cat",
    "bird",
    "horse",
    "car",
    "train",
    "plane",
    "street",
    "park",
    "beach",
    "kitchen",
    "ball",
    "guitar",
    "is",
    "are",
    "was",
    "playing",
    "riding",
    "eating",
    "cooking",
    "running",
    "sitting",
    "walking",
    "sleeping",
    "singing",
    "reading",
    "on",
    "in",
    "at",
    "with",
    "near",
    "under",
    "over",
    "by",
    "two",
    "three",
    "some",
    "many",
    "young",
    "old",
    "small",
    "big",
    "red",
    "blue",
    "green",
    "quickly",
    "slowly",
    "happily",
    "and",
    "but",
    "while",
    "because",
    "not",
    "no",
    "every",
]


def tiny_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic synthetic sentences over a small vocabulary."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + " ." for _ in range(n)]


def build_tiny_bundle(out: Path, pooling: str = "max", seed: int = 0) -> Path:
    """A complete bundle with a small randomly initialised GenSen encoder (dim 32)."""
    import torch

    from models.checkpoint import build_model
    from models.config import TrainConfig
    from models.encoder import EncoderConfig
    from models.export import export_bundle
    from models.vocabulary import train_tokenizer

    tokenizer = train_tokenizer(tiny_sentences(), vocab_size=200)
    encoder_config = EncoderConfig(
        tokenizer.get_vocab_size(), 24, 16, 1, pooling, projection_dim=32
    )
    config = TrainConfig(
        name="gensen-tiny",
        version="0.0.1",
        seed=seed,
        encoder=encoder_config,
        head_hidden=16,
        max_tokens=32,
    )
    encoder, heads = build_model(config)
    torch.manual_seed(seed)
    return export_bundle(
        out, encoder, heads, tokenizer, config, {"note": "random weights, for tests"}
    )
