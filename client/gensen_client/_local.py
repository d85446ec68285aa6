"""`--local`: the service's own engine in this process, no server (needs the service's packages:
onnxruntime and tokenizers, and this repository's `service` on the import path)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gensen_client._core import Window

BATCH_ROWS = 64


def local_embedder(
    bundle_path: Path, threads: int | None = None, windows: bool = False
) -> tuple[Callable[[list[str]], Any], dict[str, Any]]:
    """`embed(texts)` -> unit vectors exactly as `POST /embed` computes them (same tokenizer,
    windows and pooling), and the bundle's facts (`model`, `max_chars`: None, no server limit);
    `windows`: each text's windows instead, as `/embed` with `windows: true` gives them."""
    try:
        from service.bundle import load_bundle
        from service.engine import Engine, pad_rows
        from service.heads import normalize
        from service.tokenization import Encoded, TextTokenizer
        from service.windows import Windows, default_overlap, split, window_vectors
    except ImportError as exc:
        raise SystemExit(
            f"--local needs the service's packages ({exc}); run it from the repository's .venv"
        ) from exc

    bundle = load_bundle(bundle_path)
    engine = Engine(bundle, provider="auto", intra_op_threads=threads, runners=1)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    overlap = default_overlap(bundle.max_tokens)
    project = engine.project if bundle.pools_features else None

    def encode(texts: list[str], by_window: bool = False) -> tuple[Encoded, Windows, np.ndarray]:
        """`by_window`: each window's own vector (read whole, without context marks) and the
        tokens' character offsets for its span."""
        encoded = tokenizer.encode(texts, by_window)
        mark = None if by_window else bundle.context_mark
        split_texts = split(encoded.ids, bundle.max_tokens, None, overlap, str, context_mark=mark)
        rows = split_texts.rows
        out = np.empty((len(rows), bundle.dim + engine.features), dtype=np.float32)
        for start in range(0, len(rows), BATCH_ROWS):
            ids, lengths = pad_rows(rows[start : start + BATCH_ROWS], tokenizer.pad_id)
            out[start : start + len(ids)] = engine.embed(ids, lengths)
        return encoded, split_texts, out

    def embed(texts: list[str]) -> np.ndarray:
        _, split_texts, out = encode(texts)
        return normalize(split_texts.pool(out, bundle.dim, project))

    def embed_windows(texts: list[str]) -> list[list[Window]]:
        encoded, split_texts, out = encode(texts, by_window=True)
        vectors = normalize(np.ascontiguousarray(out[:, : bundle.dim]))
        found = window_vectors(split_texts, vectors, texts, encoded.offsets or [])
        return [[Window(w.start, w.stop, w.tokens, w.vector) for w in ws] for ws in found]

    facts = {"model": f"{bundle.name} {bundle.version}", "max_chars": None}
    return (embed_windows if windows else embed), facts
