"""The bulk command against a running service, beside the service's own throughput, in one run.

    python -m benchmarks.bulk [--bundle models/gensen-base] [--texts 100000] [--rounds 3]
        [--out benchmarks/results/bulk-cpu.json]

Starts `python -m service` with its defaults, writes `--texts` real sentences (the unlabeled
corpora of the shared data, in order) to a .txt file, then alternates rounds of:
- served: `benchmarks.serve`'s load (32 keep-alive clients x 8 sentences) for `--seconds`, on
  the same sentences;
- bulk: `python -m gensen_client embed` of the whole file to .npy, from start to end.
Each figure is the median over the rounds. Last, a kill: the command is SIGKILLed once about
half of the chunks are on disk and started again; the output must hold every row, in input
order (checked against the uninterrupted run's), and the restart must redo no saved chunk (so
the kill cost at most the one chunk in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.serve import REPO_ROOT, Server, free_port, request_bodies, run_load
from models.data import data_root, read_unlabeled
from service.settings import DEFAULT_BUNDLE


def corpus_lines(count: int) -> list[str]:
    """`count` distinct one-line sentences of the unlabeled corpora, in document order."""
    seen: dict[str, None] = {}
    for _, sentence in read_unlabeled(data_root()):
        line = " ".join(sentence.split())
        if 3 <= len(line.split()) <= 60:
            seen.setdefault(line, None)
            if len(seen) == count:
                break
    return list(seen)


def bulk_command(source: Path, output: Path, url: str, chunk_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gensen_client",
        "embed",
        str(source),
        str(output),
        "--url",
        url,
        "--chunk-size",
        str(chunk_size),
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'client'}:{REPO_ROOT}"}


def run_bulk(command: list[str]) -> dict:
    """One whole run of the command; its summary line."""
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, check=True)
    return json.loads(done.stderr.strip().splitlines()[-1])


def killed_and_resumed(command: list[str], output: Path, chunks: int) -> dict:
    """SIGKILL once half the chunks are saved, start again; what the restart redid."""
    partial = output.with_name(output.name + ".partial")
    first = subprocess.Popen(command, env=environment(), stderr=subprocess.DEVNULL)
    while len(list(partial.glob("chunk-*.npy"))) < chunks // 2:
        if first.poll() is not None:
            raise SystemExit("the command ended before it could be killed")
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = len(list(partial.glob("chunk-*.npy")))
    complete_before = output.exists()
    summary = run_bulk(command)
    return {
        "chunks": chunks,
        "saved_when_killed": saved,
        "output_existed_after_kill": complete_before,
        "resumed": summary["chunks_resumed"],
        # one chunk is in flight at a time, so the work lost to the kill is at most that one;
        # a saved chunk computed again would be waste on top of it
        "saved_chunks_redone": saved - summary["chunks_resumed"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="gensen-bulk-"))
    source = work / "texts.txt"
    lines = corpus_lines(args.texts)
    source.write_text("".join(f"{line}\n" for line in lines))
    server = Server(args.bundle, free_port(), [])
    bodies = request_bodies(lines, 8)
    served, bulk = [], []
    try:
        asyncio.run(run_load(server.port, bodies, 32, 1.0))  # warm up
        for round_ in range(args.rounds):
            served.append(asyncio.run(run_load(server.port, bodies, 32, args.seconds)).throughput)
            output = work / f"round{round_}.npy"
            started = time.perf_counter()
            run_bulk(bulk_command(source, output, server.url, args.chunk_size))
            bulk.append(args.texts / (time.perf_counter() - started))
            print(f"round {round_ + 1}: served {served[-1]:.0f}/s, bulk {bulk[-1]:.0f} texts/s")
        reference = np.load(work / "round0.npy")
        killed = work / "killed.npy"
        chunks = -(-args.texts // args.chunk_size)
        kill = killed_and_resumed(
            bulk_command(source, killed, server.url, args.chunk_size), killed, chunks
        )
        resumed = np.load(killed)
        kill["rows"] = len(resumed)
        kill["same_as_uninterrupted"] = bool(np.allclose(resumed, reference, atol=1e-6))
    finally:
        server.stop()
    figures = {
        "texts": args.texts,
        "served_sentences_per_s": round(statistics.median(served)),
        "bulk_texts_per_s": round(statistics.median(bulk)),
        "ratio": round(statistics.median(bulk) / statistics.median(served), 3),
        "kill": kill,
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
