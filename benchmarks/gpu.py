"""The GPU checks in one short run: raw CUDA throughput, served throughput per worker count,
latency at low load, CUDA against CPU parity (a benchmark, not a test).

    python -m benchmarks.gpu [--provider cuda] [--workers 1,4,8,16] [--seconds 5] [--out FILE]

Meant for one call on a lent GPU machine (`../shared/gpu/README.md` says how onnxruntime-gpu
gets there); it also runs on a CPU machine, where `--provider auto` falls back to the CPU, so
that it is tested here. Measured, in this order:
- parity: the device's embeddings against the CPU provider's on 512 real sentences (smallest
  cosine, largest difference) and whether both heads give the same labels;
- raw: the encoder in-process, one session, batches of 1 to 1,024 real sentences;
- served: `python -m service --provider P --workers N` (defaults otherwise) under
  `--load-processes` load generators of `--clients` keep-alive connections each, 8 sentences a
  request, for each N of `--workers`; the service's CPU per request beside it;
- low load: one client, one sentence a request, against the last server.
Figures are printed and written as JSON (default `benchmarks/results/gpu-<provider>.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
from pathlib import Path

import numpy as np

from benchmarks.serve import (
    LoadResult,
    Server,
    free_port,
    load_sentences,
    percentile,
    raw_throughput,
    request_bodies,
    run_load,
)
from service.bundle import load_bundle
from service.engine import Engine, available_cpus, pad_rows
from service.heads import normalize
from service.settings import DEFAULT_BUNDLE
from service.tokenization import TextTokenizer

RAW_BATCHES = (1, 64, 256, 1024)
RESULTS = Path(__file__).resolve().parent / "results"


def parity(bundle_path: Path, provider: str, rows: list[list[int]], pad: int) -> dict:
    """The device's vectors and head labels against the CPU provider's, on the same rows."""
    bundle = load_bundle(bundle_path)
    device = Engine(bundle, provider=provider, intra_op_threads=1, runners=1)
    cpu = Engine(bundle, provider="cpu", intra_op_threads=1, runners=1)
    got, want = [], []
    for start in range(0, len(rows), 64):
        ids, lengths = pad_rows(rows[start : start + 64], pad)
        got.append(device.embeddings(ids, lengths))
        want.append(cpu.embeddings(ids, lengths))
    a, b = np.concatenate(got), np.concatenate(want)
    cosines = np.sum(normalize(a) * normalize(b), axis=1)
    same = {
        head: bool(
            (
                device.predict(head, a, a[::-1].copy()).argmax(1)
                == cpu.predict(head, b, b[::-1].copy()).argmax(1)
            ).all()
        )
        for head in ("nli", "paraphrase")
    }
    return {
        "device_provider": device.provider,
        "sentences": len(rows),
        "min_cosine": float(cosines.min()),
        "max_abs_difference": float(np.abs(a - b).max()),
        "same_head_labels": same,
    }


def raw(bundle_path: Path, provider: str, rows: list[list[int]], pad: int, seconds: float) -> dict:
    """Sentences per second of one session at each batch size (the device's defaults)."""
    engine = Engine(load_bundle(bundle_path), provider=provider, runners=1)
    return {str(b): round(raw_throughput(engine, rows, pad, b, seconds), 1) for b in RAW_BATCHES}


def _load_worker(args: tuple[int, list[tuple[bytes, int]], int, float]) -> LoadResult:
    port, bodies, clients, seconds = args
    return asyncio.run(run_load(port, bodies, clients, seconds))


def served(
    server: Server, bodies: list[tuple[bytes, int]], processes: int, clients: int, seconds: float
) -> dict:
    """Throughput of `processes` load generators together, and the service's CPU per request."""
    main_before, total_before = server.cpu_seconds()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_load_worker, [(server.port, bodies, clients, seconds)] * processes)
    main_after, total_after = server.cpu_seconds()
    requests = sum(p.requests for p in parts)
    latencies = [x for p in parts for x in p.latencies]
    return {
        "sentences_per_s": round(sum(p.throughput for p in parts), 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "errors": sum(p.errors for p in parts),
        "main_thread_cpu_ms_per_request": round((main_after - main_before) / requests * 1000, 3),
        "service_cpu_ms_per_request": round((total_after - total_before) / requests * 1000, 3),
    }


def main(argv: list[str] | None = None) -> None:
    """Measure, print and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--provider", default="cuda", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--workers", default=None, help="comma-separated worker counts")
    parser.add_argument("--load-processes", type=int, default=None)
    parser.add_argument("--clients", type=int, default=64, help="connections per load process")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cpus = available_cpus()
    counts = (
        [int(w) for w in args.workers.split(",")]
        if args.workers
        else sorted({1, max(1, cpus // 2), cpus})
    )
    load_processes = args.load_processes or max(1, cpus // 2)

    sentences = load_sentences()
    bundle = load_bundle(args.bundle)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    rows = tokenizer.encode(sentences).ids
    figures: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({cpus} usable), {platform.platform()}",
        "bundle": f"{bundle.name} {bundle.version}",
        "parity": parity(args.bundle, args.provider, rows[:512], tokenizer.pad_id),
    }
    print("parity:", figures["parity"])
    figures["raw_sentences_per_s"] = raw(
        args.bundle, args.provider, rows, tokenizer.pad_id, min(2.0, args.seconds)
    )
    print("raw (sentences/s by batch):", figures["raw_sentences_per_s"])
    bodies = request_bodies(sentences, 8)
    figures["served_8_per_request"] = {}
    for count in counts:
        server = Server(
            args.bundle, free_port(), ["--provider", args.provider, "--workers", str(count)]
        )
        try:
            asyncio.run(run_load(server.port, bodies, 16, 1.0))  # warm up
            result = served(server, bodies, load_processes, args.clients, args.seconds)
            figures["served_8_per_request"][str(count)] = result
            print(f"served, {count} workers, {load_processes}x{args.clients} clients:", result)
            if count == counts[-1]:
                low = asyncio.run(
                    run_load(server.port, request_bodies(sentences, 1), 1, args.seconds)
                )
                figures["low_load_1_sentence"] = {
                    "p50_ms": round(percentile(low.latencies, 50), 2),
                    "p99_ms": round(percentile(low.latencies, 99), 2),
                    "median_of": len(low.latencies),
                    "workers": count,
                }
                figures["server_info_limits"] = server.info().get("limits", {})
        finally:
            server.stop()
    print("low load:", figures.get("low_load_1_sentence"))
    best = max(figures["served_8_per_request"].values(), key=lambda r: r["sentences_per_s"])
    figures["best_served_sentences_per_s"] = best["sentences_per_s"]
    out = args.out or RESULTS / f"gpu-{figures['parity']['device_provider']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
