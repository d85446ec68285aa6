"""Export a trained encoder and its heads to a model bundle (the contract in DESIGN.md).

    python -m models.export --checkpoint runs/gensen-base/checkpoint.pt --out models/gensen-base

Writes encoder.onnx, nli.onnx, paraphrase.onnx, tokenizer.json and model.json, and for an
encoder with a projection also projection.onnx: encoder.onnx then outputs the pooled features
before its projection too, and for max pooling reads ids from the vocabulary size up as context
only (`windows_card`), so that the service pools the windows of a long text as the model pools
one (max over the states each window owns, then the projection; the card's `windows`).
`--rebuild-encoder BUNDLE` gives an exported bundle this graph from its own weights. The word
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
from models.encoder import PAD_ID, EncoderConfig, GensenEncoder
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


def pools_windows(encoder: EncoderConfig) -> bool:
    """Whether the export gives an encoder `features`, context marks and the card `windows`:
    it max-pools and projects."""
    return bool(encoder.projection_dim) and encoder.pooling == "max"


def windows_card(vocab_size: int) -> dict:
    """The card's `windows`: how the windows of a text past `max_tokens` make its vector."""
    return {
        "pooling": "max",
        "context_mark": vocab_size,
        "about": "a text past max_tokens is read in overlapping windows; in each, the tokens that"
        " a neighbouring window reads with more context (up to the middle of their overlap) are"
        " sent as id + context_mark, which encoder.onnx reads but leaves out of its max pooling;"
        " the text's vector is projection.onnx applied to the max over its windows of"
        " encoder.onnx's `features` output (the max-pooled BiGRU states before the projection),"
        " as the model pools the states of one long text",
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


def export_encoder(encoder: GensenEncoder, path: Path) -> None:
    """encoder.onnx: input_ids int64 [batch, seq], lengths int64 [batch] -> embeddings [batch, dim]
    (and `features` [batch, 2H], with projection.onnx beside it, when the encoder projects; ids
    from the vocabulary size up read as context only, when it also max-pools).

    Built directly around ONNX's bidirectional GRU (models.onnx_graph) rather than traced.
    """
    round_embeddings_to_half(encoder)
    mark = encoder.config.vocab_size if pools_windows(encoder.config) else None
    graph = build_encoder_graph(encoder.eval(), context_mark=mark)
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


def check_encoder(encoder: GensenEncoder, path: Path, vocab_size: int, atol: float = 1e-5) -> float:
    """Symbolic axes present, and ONNX Runtime agrees with torch on other shapes (with context
    marks too, where the graph reads them); returns max error."""
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
        if pools_windows(encoder.config) and longest > 1:
            worst = max(worst, _context_error(encoder, session, ids, lengths))
        if project is not None:  # the features, projected on their own, give the embeddings
            (again,) = project.run(None, {FEATURES: got[1]})
            worst = max(worst, float(np.abs(again - want).max()))
    if worst > atol:
        raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {worst:.2e}")
    return worst


def _context_error(encoder: GensenEncoder, session, ids: np.ndarray, lengths: np.ndarray) -> float:
    """How far encoder.onnx's embeddings of rows whose first and last quarter are marked as
    context are from torch's max over the unmarked tokens' states."""
    positions = np.arange(ids.shape[1])
    pooled = (positions >= lengths[:, None] // 4) & (positions < lengths[:, None] * 3 // 4 + 1)
    marked = np.where(pooled, ids, ids + encoder.config.vocab_size)
    (got,) = session.run(["embeddings"], {"input_ids": marked, "lengths": lengths})
    ids_t, lengths_t = torch.from_numpy(ids), torch.from_numpy(lengths)
    with torch.no_grad():
        states = encoder.token_states(ids_t, lengths_t)
        want = encoder.projection(encoder.pool(states, lengths_t, torch.from_numpy(pooled)))
    return float(np.abs(got - want.numpy()).max())


def model_card(
    encoder: GensenEncoder, config: TrainConfig | None, tokenizer: Tokenizer, extra: dict
) -> dict:
    """model.json: everything the service needs to know, plus provenance."""
    enc = encoder.config
    card = {
        "name": config.name if config else "gensen",
        "version": config.version if config else "0.0.0",
        "architecture": "gensen-bigru",
        "dim": enc.output_dim,
        "pooling": enc.pooling,
        "lowercase": config.lowercase if config else False,
        "max_tokens": config.max_tokens if config else 128,
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
        **({"windows": windows_card(enc.vocab_size)} if pools_windows(enc) else {}),
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
    export_encoder(encoder, out / FILES["encoder"])
    check_encoder(encoder, out / FILES["encoder"], tokenizer.get_vocab_size())
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
    an encoder that max-pools and projects: `features`, context marks and projection.onnx),
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
    export_encoder(encoder, path)
    check_encoder(encoder, path, card["vocab_size"])
    moved = _embeddings_distance(old, path, card["vocab_size"])
    if pools_windows(config):
        card["files"]["projection"] = PROJECTION_FILE
        card["windows"] = windows_card(config.vocab_size)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return moved


def _embeddings_distance(old: onnx.ModelProto, path: Path, vocab_size: int) -> float:
    """Largest difference between the embeddings of two encoder graphs on random rows
    (RuntimeError over 1e-5)."""
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
        " (pooled features, context marks, projection.onnx), and stop",
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
