"""ONNX Runtime intra-op threads, 1 against 2, side by side on this machine.

    python -m benchmarks.threads [--bundle models/gensen-base] [--rounds 4] [--seconds 4]

Both configurations are measured in alternating rounds of the same run, so that a noisy
neighbour weighs on both alike; the table gives medians. Raw: the encoder in-process on real
sentences in arrival order at batch 16 and 64. Served: two `python -m service` processes,
`--intra-op-threads 1` and `2`, each under 32 keep-alive clients posting 8 sentences a request.
This is what chose `GENSEN_INTRA_OP_THREADS` in `k8s/base/config.env` (pods of 2 CPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
from pathlib import Path

from benchmarks.serve import (
    Server,
    free_port,
    load_sentences,
    raw_throughput,
    request_bodies,
    run_load,
)
from service.bundle import load_bundle
from service.engine import Engine
from service.settings import DEFAULT_BUNDLE
from service.tokenization import TextTokenizer

THREADS = (1, 2)
BATCHES = (16, 64)


def main(argv: list[str] | None = None) -> None:
    """Measure and print the medians (and write them as JSON with --out)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    sentences = load_sentences()
    rows = tokenizer.encode(sentences).ids
    engines = {t: Engine(bundle, provider="cpu", intra_op_threads=t, runners=1) for t in THREADS}
    servers = {t: Server(args.bundle, free_port(), ["--intra-op-threads", str(t)]) for t in THREADS}
    bodies = request_bodies(sentences, 8)
    raw: dict[str, list[float]] = {f"raw t={t} b={b}": [] for t in THREADS for b in BATCHES}
    served: dict[str, list[float]] = {f"served t={t}": [] for t in THREADS}
    try:
        for r in range(args.rounds):
            for t in THREADS if r % 2 == 0 else THREADS[::-1]:
                for b in BATCHES:
                    speed = raw_throughput(engines[t], rows, tokenizer.pad_id, b, args.seconds)
                    raw[f"raw t={t} b={b}"].append(speed)
                load = asyncio.run(run_load(servers[t].port, bodies, 32, args.seconds))
                served[f"served t={t}"].append(load.throughput)
    finally:
        for server in servers.values():
            server.stop()
    medians = {k: round(statistics.median(v), 1) for k, v in {**raw, **served}.items()}
    for name, value in medians.items():
        print(f"{name:>22}: {value:8.1f} sentences/s")
    if args.out:
        figures = {"cpus": os.cpu_count(), "rounds": args.rounds, "sentences_per_s": medians}
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
