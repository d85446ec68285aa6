"""`--local`: the service's own engine in this process, no server (needs the service's packages:
onnxruntime and tokenizers, and this repository's `service` on the import path)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BATCH_ROWS = 64


def local_embedder(
    bundle_path: Path, threads: int | None = None
) -> tuple[Callable[[list[str]], np.ndarray], dict[str, Any]]:
    """`embed(texts)` -> unit vectors exactly as `POST /embed` computes them (same tokenizer,
    windows and pooling), and the bundle's facts (`model`, `max_chars`: None, no server limit)."""
    try:
        from service.bundle import load_bundle
        from service.engine import Engine, pad_rows
        from service.heads import normalize
        from service.tokenization import TextTokenizer
        from service.windows import default_overlap, split
    except ImportError as exc:
        raise SystemExit(
            f"--local needs the service's packages ({exc}); run it from the repository's .venv"
        ) from exc

    bundle = load_bundle(bundle_path)
    engine = Engine(bundle, provider="auto", intra_op_threads=threads, runners=1)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    overlap = default_overlap(bundle.max_tokens)
    project = engine.project if bundle.pools_features else None

    def embed(texts: list[str]) -> np.ndarray:
        windows = split(tokenizer.encode(texts).ids, bundle.max_tokens, None, overlap, str)
        rows = windows.rows
        out = np.empty((len(rows), bundle.dim + engine.features), dtype=np.float32)
        for start in range(0, len(rows), BATCH_ROWS):
            ids, lengths = pad_rows(rows[start : start + BATCH_ROWS], tokenizer.pad_id)
            out[start : start + len(ids)] = engine.embed(ids, lengths)
        return normalize(windows.pool(out, bundle.dim, project))

    return embed, {"model": f"{bundle.name} {bundle.version}", "max_chars": None}
