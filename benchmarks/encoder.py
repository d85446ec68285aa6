"""Raw encoder speed: real sentences per second through ONNX Runtime, batch 64, 2 threads.

    python -m benchmarks.encoder [--bundle models/gensen-base] [--threads 2] [--batch 64]
        [--baseline OTHER_BUNDLE]

Sentences come from the shared data (STS-B dev, SNLI test), shuffled (no length sorting), so every
batch pays the padding a recurrent encoder pays in real traffic. Each configuration runs several
rounds and the median is printed; tokenisation is timed separately from the encoder. Where
a training checkpoint is given, the same model in torch eager runs side by side as a reference,
and `--chunk-rows 8,16,32` times encoder graphs rebuilt from it with those chunk sizes
(models.onnx_graph), interleaved with the bundle's own file. `--baseline` times another bundle
(its own tokenizer and limit) on the same sentences, rounds interleaved, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models import data
from models.encoder import PAD_ID
from models.vocabulary import encode, pad_batch


def real_sentences(limit: int, seed: int = 0) -> list[str]:
    root = data.data_root()
    pairs = [*data.read_stsb(root, "dev"), *data.read_snli(root, "test")]
    sentences = [s for p in pairs for s in (p.a, p.b)]
    random.Random(seed).shuffle(sentences)
    return sentences[:limit]


def batches(rows: list[list[int]], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [pad_batch(rows[i : i + size], PAD_ID) for i in range(0, len(rows), size)]


def rate(run, prepared, count: int, rounds: int) -> float:
    """Median sentences/s over `rounds` passes (after one warm-up pass)."""
    for ids, lengths in prepared[:3]:
        run(ids, lengths)
    speeds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for ids, lengths in prepared:
            run(ids, lengths)
        speeds.append(count / (time.perf_counter() - start))
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, default=Path("models/gensen-base"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="also time this checkpoint in torch eager"
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another bundle to time side by side"
    )
    parser.add_argument(
        "--chunk-rows",
        default="",
        help="with --checkpoint: comma-separated chunk sizes to rebuild the graph with and time",
    )
    args = parser.parse_args()

    card = json.loads((args.bundle / "model.json").read_text())
    sentences = real_sentences(args.sentences)
    start = time.perf_counter()
    rows = bundle_rows(args.bundle, sentences)
    tokenize_rate = len(sentences) / (time.perf_counter() - start)
    prepared = batches(rows, args.batch)

    encoder_file = str(args.bundle / card["files"]["encoder"])
    graphs = {"ONNX Runtime encoder": (encoder_file, prepared)}
    graphs.update({name: (g, prepared) for name, g in rebuilt_graphs(args).items()})
    if args.baseline is not None:
        other = json.loads((args.baseline / "model.json").read_text())
        baseline = f"baseline {other['name']} {other['version']}"
        other_rows = batches(bundle_rows(args.baseline, sentences), args.batch)
        graphs[baseline] = (str(args.baseline / other["files"]["encoder"]), other_rows)
    rates = ort_rates(graphs, args.threads, len(rows), args.rounds)
    ort_rate = rates["ONNX Runtime encoder"]

    print(
        f"bundle {card['name']} {card['version']}: {len(rows)} real sentences, mean {np.mean([len(r) for r in rows]):.1f} tokens, batch {args.batch}, {args.threads} threads, shuffled"
    )
    print(f"{'tokenizers (batch encode)':<32}{tokenize_rate:>10.0f} sentences/s")
    for name, value in rates.items():
        print(f"{name:<32}{value:>10.0f} sentences/s (median of {args.rounds})")
    if args.baseline is not None:
        print(f"{'this bundle / baseline':<32}{ort_rate / rates[baseline]:>10.2f}")
    torch_rate = torch_eager_rate(args, prepared, len(rows))
    if torch_rate:
        print(
            f"{'torch eager, same weights':<32}{torch_rate:>10.0f} sentences/s  (ONNX Runtime / torch = {ort_rate / torch_rate:.2f})"
        )


def bundle_rows(bundle: Path, sentences: list[str]) -> list[list[int]]:
    """Token rows of `sentences` by a bundle's tokenizer, cut at its limit."""
    card = json.loads((bundle / "model.json").read_text())
    tokenizer = Tokenizer.from_file(str(bundle / card["files"]["tokenizer"]))
    return encode(tokenizer, sentences, card["max_tokens"])


def ort_rates(graphs: dict[str, tuple], threads: int, count: int, rounds: int) -> dict[str, float]:
    """Median sentences/s of each graph (a path or serialised model, with its prepared
    batches), rounds interleaved."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    runs = {}
    for name, (graph, _) in graphs.items():
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        runs[name] = lambda ids, lengths, s=session: s.run(
            None, {"input_ids": ids, "lengths": lengths}
        )
    speeds: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, run in runs.items():
            speeds[name].append(rate(run, graphs[name][1], count, rounds=1))
    return {name: statistics.median(values) for name, values in speeds.items()}


def rebuilt_graphs(args) -> dict[str, bytes]:
    """Encoder graphs rebuilt from --checkpoint with each of --chunk-rows."""
    if not args.chunk_rows:
        return {}
    if args.checkpoint is None:
        raise SystemExit("--chunk-rows needs --checkpoint")
    from models.export import round_embeddings_to_half
    from models.onnx_graph import build_encoder_graph

    encoder = load_checkpoint_encoder(args.checkpoint)
    round_embeddings_to_half(encoder)
    return {
        f"rebuilt, chunks of {rows} rows": build_encoder_graph(encoder, rows).SerializeToString()
        for rows in map(int, args.chunk_rows.split(","))
    }


def load_checkpoint_encoder(path: Path):
    """The encoder of a training checkpoint, in eval mode."""
    import torch

    from models.config import TrainConfig
    from models.encoder import GensenEncoder

    state = torch.load(path, map_location="cpu", weights_only=False)
    model = GensenEncoder(TrainConfig.from_dict(state["config"]).encoder).eval()
    model.load_state_dict(state["encoder"])
    return model


def torch_eager_rate(args, prepared, count: int) -> float | None:
    """The same model in torch eager, from a training checkpoint (--checkpoint); else None."""
    if args.checkpoint is None:
        return None
    import torch

    torch.set_num_threads(args.threads)
    model = load_checkpoint_encoder(args.checkpoint)
    with torch.no_grad():
        return rate(
            lambda ids, lengths: model(torch.from_numpy(ids), torch.from_numpy(lengths)),
            prepared,
            count,
            args.rounds,
        )


if __name__ == "__main__":
    main()
