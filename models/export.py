"""Export a trained encoder and its heads to a model bundle (the contract in DESIGN.md).

    python -m models.export --checkpoint runs/gensen-base/checkpoint.pt --out models/gensen-base

Writes encoder.onnx, nli.onnx, paraphrase.onnx, tokenizer.json and model.json, and for an
encoder with a projection also projection.onnx: encoder.onnx then outputs the pooled features
before its projection too, and for max pooling the same pooled by part (a row's first and last
`edge_tokens` apart from its middle), so that the service pools the windows of a long text as
the model pools one (the max over the states each window owns, then the projection; the card's
`windows`). `--rebuild-encoder BUNDLE` gives an exported bundle this graph from its own
weights. The word
embedding table is stored as float16 (the model's weights are rounded to it first, so torch and
ONNX still agree to float32 precision); every other weight stays float32. After writing, the
export checks the graphs' symbolic axes and runs other batch sizes and lengths against torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import torch
from tokenizers import Tokenizer
from torch import nn

from models.checkpoint import build_model, load_checkpoint
from models.config import TrainConfig
from models.encoder import PAD_ID, EncoderConfig, GensenEncoder, part_maxes
from models.onnx_graph import (
    CHUNK_ROWS,
    FEATURES,
    OPSET,
    build_encoder_graph,
    build_projection_graph,
    encoder_from_graph,
    projection_weights,
)
from models.vocabulary import pad_batch

NLI_LABELS = ["entailment", "neutral", "contradiction"]
PARAPHRASE_LABELS = ["not_paraphrase", "paraphrase"]
FILES = {
    "tokenizer": "tokenizer.json",
    "encoder": "encoder.onnx",
    "nli": "nli.onnx",
    "paraphrase": "paraphrase.onnx",
}
PROJECTION_FILE = "projection.onnx"


def window_edge(max_tokens: int) -> int:
    """Tokens at each end of a window that its neighbour reads with more context: half of the
    service's default window overlap (max_tokens // 8), 16 for windows of 256."""
    return max_tokens // 16


def windows_card(max_tokens: int) -> dict:
    """The card's `windows` for an encoder that max-pools and projects: how the windows of a
    text past `max_tokens` make its vector."""
    return {
        "pooling": "max",
        "edge_tokens": window_edge(max_tokens),
        "about": "a text past max_tokens is read in windows overlapping by at least 2 x"
        " edge_tokens; its vector is projection.onnx applied to the element-wise max of the states"
        " each window owns, from encoder.onnx's `part_features` (max-pooled BiGRU states of a"
        " row's first edge_tokens, its middle and its last edge_tokens, side by side): every"
        " window gives its middle, the first window its head, the last its tail, so that each"
        " token's state comes from a window reading at least edge_tokens of context on each side"
        " of it where the text has them, as one window holding the whole text would",
    }


@contextmanager
def _quiet_legacy_exporter():
    """The TorchScript-based exporter is chosen on purpose (see _to_onnx); hide its notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield


def hardware_description() -> str:
    return f"{platform.machine()} CPU x{os.cpu_count()}, torch {torch.__version__}"


def round_embeddings_to_half(encoder: GensenEncoder) -> None:
    """Make the embedding table exactly representable in float16 (what the bundle stores)."""
    with torch.no_grad():
        encoder.src_embedding.weight.copy_(encoder.src_embedding.weight.half().float())


def _to_onnx(module: nn.Module, args: tuple, path: Path, inputs: list[str], axes: dict) -> None:
    """torch -> ONNX (the pair heads) with the TorchScript-based exporter, which keeps the
    dynamic batch axis without a torch.export trace."""
    with _quiet_legacy_exporter():
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=[name for name in axes if name not in inputs],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_encoder(encoder: GensenEncoder, path: Path, edge_tokens: int = 0) -> None:
    """encoder.onnx: input_ids int64 [batch, seq], lengths int64 [batch] -> embeddings [batch, dim]
    (and `features` [batch, 2H], with projection.onnx beside it, when the encoder projects; with
    `edge_tokens` and max pooling, `part_features` [batch, 3 × 2H] too).

    Built directly around ONNX's bidirectional GRU (models.onnx_graph) rather than traced.
    """
    round_embeddings_to_half(encoder)
    graph = build_encoder_graph(encoder.eval(), edge_tokens=edge_tokens)
    onnx.save(graph, str(path))
    if encoder.projection is not None:
        write_projection(graph, path.parent / PROJECTION_FILE)


def write_projection(encoder: onnx.ModelProto, path: Path) -> None:
    """projection.onnx from the projection weights of an encoder graph built here."""
    onnx.save(build_projection_graph(*projection_weights(encoder)), str(path))


def export_head(head: nn.Module, dim: int, path: Path) -> None:
    """nli.onnx / paraphrase.onnx: u, v float32 [batch, dim] -> logits [batch, classes]."""
    u = torch.randn(2, dim)
    axes = {"u": {0: "batch"}, "v": {0: "batch"}, "logits": {0: "batch"}}
    _to_onnx(head, (u, u), path, ["u", "v"], axes)
    onnx.checker.check_model(onnx.load(str(path)))


def check_encoder(
    encoder: GensenEncoder, path: Path, vocab_size: int, atol: float = 1e-5, edge_tokens: int = 0
) -> float:
    """Symbolic axes present, and ONNX Runtime agrees with torch on other shapes (its
    `part_features` too, where it has them); returns max error."""
    import onnxruntime as ort

    graph = onnx.load(str(path)).graph
    seq_axis = graph.input[0].type.tensor_type.shape.dim[1]
    if not seq_axis.dim_param:
        raise RuntimeError(f"{path}: input_ids has a fixed sequence length {seq_axis.dim_value}")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    projection = path.parent / PROJECTION_FILE
    project = (
        ort.InferenceSession(str(projection), providers=["CPUExecutionProvider"])
        if encoder.projection is not None
        else None
    )
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, longest in ((1, 1), (3, 17), (8, 40)):
        rows = [
            list(rng.integers(4, vocab_size, rng.integers(1, longest + 1))) for _ in range(batch)
        ]
        ids, lengths = pad_batch(rows, PAD_ID)
        got = session.run(None, {"input_ids": ids, "lengths": lengths})
        with torch.no_grad():
            want = encoder.eval()(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
        worst = max(worst, float(np.abs(got[0] - want).max()))
        if len(got) == 3:
            worst = max(worst, _parts_error(encoder, ids, lengths, got[2], edge_tokens))
        if project is not None:  # the features, projected on their own, give the embeddings
            (again,) = project.run(None, {FEATURES: got[1]})
            worst = max(worst, float(np.abs(again - want).max()))
    if worst > atol:
        raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {worst:.2e}")
    return worst


def _max_tokens(config: TrainConfig | None) -> int:
    return config.max_tokens if config else 128


def _parts_error(
    encoder: GensenEncoder, ids: np.ndarray, lengths: np.ndarray, got: np.ndarray, edge: int
) -> float:
    """How far encoder.onnx's `part_features` are from torch's (inf where an empty part is not
    -inf or the reverse)."""
    ids_t, lengths_t = torch.from_numpy(ids), torch.from_numpy(lengths)
    with torch.no_grad():
        want = part_maxes(encoder.token_states(ids_t, lengths_t), lengths_t, edge).numpy()
    if not np.array_equal(np.isinf(got), np.isinf(want)):
        return float("inf")
    finite = np.isfinite(want)
    return float(np.abs(got[finite] - want[finite]).max())


def model_card(
    encoder: GensenEncoder, config: TrainConfig | None, tokenizer: Tokenizer, extra: dict
) -> dict:
    """model.json: everything the service needs to know, plus provenance."""
    enc = encoder.config
    max_tokens = _max_tokens(config)
    card = {
        "name": config.name if config else "gensen",
        "version": config.version if config else "0.0.0",
        "architecture": "gensen-bigru",
        "dim": enc.output_dim,
        "pooling": enc.pooling,
        "lowercase": config.lowercase if config else False,
        "max_tokens": max_tokens,
        "vocab_size": tokenizer.get_vocab_size(),
        "pad_id": PAD_ID,
        "encoder": {
            "embedding_dim": enc.embedding_dim,
            "hidden_dim": enc.hidden_dim,
            "num_layers": enc.num_layers,
            "projection_dim": enc.projection_dim,
        },
        # how encoder.onnx batches (onnx_graph.py): a server need not group inputs by length
        "encoder_graph": {"sorts_by_length": True, "chunk_rows": CHUNK_ROWS},
        "files": dict(FILES, **({"projection": PROJECTION_FILE} if enc.projection_dim else {})),
        "labels": {"nli": NLI_LABELS, "paraphrase": PARAPHRASE_LABELS},
        "paraphrase_threshold": 0.5,
        **({"windows": windows_card(max_tokens)} if _pools_by_part(enc) else {}),
        "training": {},
        "evaluation": {},
        "license": "Apache-2.0 (code and weights); trained on data sets with their own licences, see training.data",
    }
    card.update(extra)
    return card


def export_bundle(
    out: Path,
    encoder: GensenEncoder,
    heads: nn.ModuleDict,
    tokenizer: Tokenizer,
    config: TrainConfig | None,
    training: dict | None = None,
    card_extra: dict | None = None,
) -> Path:
    """Write a complete bundle to `out` and check it; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / FILES["tokenizer"]))
    edge = window_edge(_max_tokens(config))
    export_encoder(encoder, out / FILES["encoder"], edge)
    check_encoder(encoder, out / FILES["encoder"], tokenizer.get_vocab_size(), edge_tokens=edge)
    for name in ("nli", "paraphrase"):
        export_head(heads[name], encoder.config.output_dim, out / FILES[name])
    extra = dict(card_extra or {})
    summary = training_summary(config) if config is not None and config.phases else {}
    extra["training"] = {**summary, **extra.get("training", {}), **(training or {})}
    card = model_card(encoder, config, tokenizer, extra)
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return out


def rebuild_encoder(bundle: Path) -> float:
    """Build a bundle's encoder.onnx again from its own weights with this export's graph (for
    an encoder that max-pools and projects: `features`, `part_features` and projection.onnx),
    update its card, and return how far the new graph's embeddings are from the old one's
    (RuntimeError over 1e-5). No retraining: the weights are the ones the bundle holds."""
    card_path = bundle / "model.json"
    card = json.loads(card_path.read_text())
    path = bundle / card["files"]["encoder"]
    old = onnx.load(str(path))
    shape = card["encoder"]
    config = EncoderConfig(
        vocab_size=card["vocab_size"],
        embedding_dim=shape["embedding_dim"],
        hidden_dim=shape["hidden_dim"],
        num_layers=shape["num_layers"],
        pooling=card["pooling"],
        projection_dim=shape["projection_dim"],
    )
    encoder = encoder_from_graph(old, config)
    edge = window_edge(card["max_tokens"])
    export_encoder(encoder, path, edge)
    check_encoder(encoder, path, card["vocab_size"], edge_tokens=edge)
    moved = _embeddings_distance(old, path, card["vocab_size"])
    if _pools_by_part(config):
        card["files"]["projection"] = PROJECTION_FILE
        card["windows"] = windows_card(card["max_tokens"])
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return moved


def _embeddings_distance(old: onnx.ModelProto, path: Path, vocab_size: int) -> float:
    """Largest difference between the embeddings of two encoder graphs on random rows."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        for graph in (old.SerializeToString(), str(path))
    ]
    rng = np.random.default_rng(1)
    rows = [list(rng.integers(4, vocab_size, rng.integers(1, 300))) for _ in range(12)]
    ids, lengths = pad_batch(rows, PAD_ID)
    before, after = (
        s.run(["embeddings"], {"input_ids": ids, "lengths": lengths})[0] for s in sessions
    )
    moved = float(np.abs(after - before).max())
    if moved > 1e-5:
        raise RuntimeError(f"{path}: the rebuilt graph's embeddings moved by {moved:.2e}")
    return moved


def _pools_by_part(encoder: EncoderConfig) -> bool:
    """Whether the export gives an encoder `part_features` and its card `windows`."""
    return bool(encoder.projection_dim) and encoder.pooling == "max"


def training_summary(config: TrainConfig) -> dict:
    """The card's provenance: data, teachers, what was held out, the task schedule."""
    tasks = {n for p in config.phases for n in p.weights}
    fit = config.head_fit
    mrpc_use = "the paraphrase task and head" if "paraphrase" in tasks else "the paraphrase head"
    ppdb = "paraphrase" in tasks or (fit is not None and fit.paraphrase_with_ppdb)
    return {
        "data": [
            "SNLI dev+test",
            "SICK train",
            "RTE 1-3",
            "STS Benchmark train",
            "STS 2012 train (less the 257 pairs that stand in STS test sets)",
            f"MRPC train less its dev fifth ({mrpc_use} only)",
            *(["PPDB lexical synonyms"] if ppdb else []),
            "NLTK corpora and plain text (unlabeled, for distillation; passages of consecutive"
            " sentences in document order)",
        ],
        "held_out": [
            "STS-B dev, SICK trial and MRPC dev (a fixed seeded fifth of MRPC train) sentences:"
            " out of the distillation corpus",
            "every pair with an STS-B dev sentence: out of every labeled task",
            "MRPC dev: out of every task and of the paraphrase head",
        ],
        "teachers": list(config.teachers),
        "teacher_target": (
            "unit vectors of each teacher side by side, centred, PCA to the output dimension"
            if len(config.teachers) > 1
            else "the teacher's vectors"
        ),
        "passage_target": "the mean of the unit targets of the passage's sentences",
        "tasks": sorted(tasks),
        "phases": [{"name": p.name, "steps": p.steps, "weights": p.weights} for p in config.phases],
        "steps": config.total_steps,
        "max_tokens": config.max_tokens,
        "seed": config.seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a training checkpoint to a model bundle")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--rebuild-encoder",
        type=Path,
        metavar="BUNDLE",
        help="build a bundle's encoder.onnx again from its own weights with this export's graph"
        " (pooled and part features, projection.onnx), and stop",
    )
    args = parser.parse_args()
    if args.rebuild_encoder:
        moved = rebuild_encoder(args.rebuild_encoder)
        print(f"{args.rebuild_encoder}: encoder rebuilt, embeddings moved by {moved:.1e}")
        return
    if args.checkpoint is None or args.out is None:
        parser.error("--checkpoint and --out are needed to export")
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    config = TrainConfig.from_dict(state["config"])
    encoder, heads = build_model(config)
    load_checkpoint(args.checkpoint, encoder, heads)
    tokenizer = Tokenizer.from_file(str(args.checkpoint.parent / "tokenizer.json"))
    export_bundle(args.out, encoder, heads, tokenizer, config, {"hardware": hardware_description()})
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
