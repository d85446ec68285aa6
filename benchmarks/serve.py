"""Served throughput against the raw encoder, side by side in one run (a benchmark, not a test).

    python -m benchmarks.serve [--bundle models/gensen-base] [--clients 32] [--seconds 5]
        [--per-request 8] [--workers N] [-- extra service flags]

Measures, on this machine and in one run, with real sentences (STS-B dev when present):
- raw: the encoder in-process through `service.engine` at its best batch size and at batch 64,
  with `--raw-threads` intra-op threads (default: one per CPU), tokenised beforehand so that
  only inference counts, on the sentences in arrival order (the ceiling of a server fed the
  same stream) and sorted by length (no padding: an offline best case);
- served: `python -m service` with its defaults (plus `--workers` and any extra flags) on
  loopback under `--clients` concurrent keep-alive clients, and the CPU the service's processes
  spent per request: their main threads (the event loops) and all their threads;
- naive: the same server with one input per inference (`--max-batch-rows 1`): the floor;
- latency at low load: one client, one sentence per request, p50 and p99.
Raw and served rounds alternate, and each figure is the median of `--rounds`, so that a noisy
neighbour on the machine weighs on both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from models.data import data_root, read_stsb
from service.bundle import load_bundle
from service.engine import Engine, available_cpus, pad_rows
from service.settings import DEFAULT_BUNDLE, REPO_ROOT
from service.tokenization import TextTokenizer

BATCH_SIZES = (1, 8, 16, 32, 64, 128)
CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def load_sentences(limit: int = 3000) -> list[str]:
    """STS-B dev sentences (the shared data folder, see models.data), shuffled; generated ones
    if the data is absent."""
    rng = random.Random(0)
    root = data_root()
    if (root / "sts" / "stsb" / "sts-dev.csv").is_file():
        sentences = [s for pair in read_stsb(root, "dev") for s in (pair.a, pair.b)]
    else:
        words = "a man woman dog cat is are playing riding eating on in the park street guitar"
        vocab = words.split()
        sentences = [" ".join(rng.choices(vocab, k=rng.randint(4, 20))) for _ in range(limit)]
    rng.shuffle(sentences)
    return sentences[:limit]


# raw: the encoder in-process


def raw_throughput(
    engine: Engine, rows: list[list[int]], pad_id: int, batch: int, seconds: float
) -> float:
    """Sentences per second through `engine.embed` in consecutive batches of `batch` rows."""
    batches = [
        pad_rows(rows[start : start + batch], pad_id)
        for start in range(0, len(rows) - batch + 1, batch)
    ]
    random.Random(0).shuffle(batches)  # any stretch of time sees every length
    engine.embed(*batches[0])
    done, began, i = 0, time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        engine.embed(*batches[i % len(batches)])
        done, i = done + batch, i + 1
    return done / (time.perf_counter() - began)


def raw_latencies(engine: Engine, rows: list[list[int]], count: int = 500) -> list[float]:
    """Seconds of `engine.embed` on one sentence at a time (the low-load reference)."""
    times = []
    for row in rows[:count]:
        ids = np.array([row], dtype=np.int64)
        lengths = np.array([len(row)], dtype=np.int64)
        start = time.perf_counter()
        engine.embed(ids, lengths)
        times.append(time.perf_counter() - start)
    return times


# served: a real server and a light keep-alive load generator


class Server:
    """`python -m service` on a free loopback port, with extra flags; from the checkout at
    `tree` (default: this one)."""

    def __init__(self, bundle: Path, port: int, flags: list[str], tree: Path = REPO_ROOT) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        command = [sys.executable, "-m", "service", "--bundle", str(bundle), "--port", str(port)]
        command += ["--log-level", "warning", *flags]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(command, cwd=tree, env=env)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise SystemExit("server did not become ready")

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds so far of the service's processes: their main threads, all threads."""
        main = total = 0.0
        for pid in _process_tree(self.proc.pid):
            main += _cpu_of(f"/proc/{pid}/task/{pid}/stat")
            total += _cpu_of(f"/proc/{pid}/stat")
        return main, total

    def info(self) -> dict:
        """The server's /info."""
        return httpx.get(f"{self.url}/info").json()

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.terminate()
        self.proc.wait(60)


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()
            pids += [int(c) for c in children]
        i += 1
    return pids


def _cpu_of(stat: str) -> float:
    """User plus system CPU seconds from a /proc stat file (0 if it is gone)."""
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    """Sentences per second answered 200, per-request latencies, failures, and the service's
    CPU per request (main threads, all threads; seconds) when measured."""

    throughput: float
    latencies: list[float]
    errors: int
    requests: int = 0
    main_cpu_per_request: float | None = None
    cpu_per_request: float | None = None


async def run_load(
    port: int, bodies: list[tuple[bytes, int]], clients: int, seconds: float
) -> LoadResult:
    """`clients` keep-alive connections posting `bodies` to /embed in turn for `seconds`."""
    stop_at = time.perf_counter() + seconds
    latencies: list[float] = []
    counts = [0, 0]  # sentences answered, errors
    began = time.perf_counter()
    await asyncio.gather(
        *(_client(port, bodies, k, clients, stop_at, latencies, counts) for k in range(clients))
    )
    elapsed = time.perf_counter() - began
    return LoadResult(counts[0] / elapsed, latencies, counts[1], len(latencies))


def measured_load(
    server: Server, bodies: list[tuple[bytes, int]], clients: int, seconds: float
) -> LoadResult:
    """`run_load` against `server`, with the CPU its processes spent per request."""
    main_before, total_before = server.cpu_seconds()
    result = asyncio.run(run_load(server.port, bodies, clients, seconds))
    main_after, total_after = server.cpu_seconds()
    if result.requests:
        result.main_cpu_per_request = (main_after - main_before) / result.requests
        result.cpu_per_request = (total_after - total_before) / result.requests
    return result


async def _client(
    port: int,
    bodies: list[tuple[bytes, int]],
    first: int,
    step: int,
    stop_at: float,
    latencies: list[float],
    counts: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = first
    while time.perf_counter() < stop_at:
        request, sentences = bodies[i % len(bodies)]
        i += step
        sent = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = CONTENT_LENGTH.search(head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        latencies.append(time.perf_counter() - sent)
        if head[9:12] == b"200":
            counts[0] += sentences
        else:
            counts[1] += 1
    writer.close()


ROUTES = ("/embed", "/v1/embeddings", "/similarity", "/paraphrase", "/nli")


def request_body(route: str, texts: list[str]) -> dict:
    """The JSON body of `route` for `texts` (pairs of consecutive texts on the pair routes)."""
    pairs = list(zip(texts[::2], texts[1::2], strict=False))
    if route == "/v1/embeddings":
        return {"input": texts}
    if route == "/similarity":
        return {"inputs": {"source_sentence": texts[0], "sentences": texts[1:] or texts}}
    if route == "/paraphrase":
        return {"pairs": [list(pair) for pair in pairs] or [[texts[0], texts[0]]]}
    if route == "/nli":
        return {"pairs": [{"premise": a, "hypothesis": b} for a, b in pairs or [(texts[0],) * 2]]}
    return {"inputs": texts}


def request_bodies(
    sentences: list[str], per_request: int, route: str = "/embed"
) -> list[tuple[bytes, int]]:
    """Pre-built HTTP/1.1 requests to `route` with `per_request` sentences each."""
    bodies = []
    for start in range(0, len(sentences) - per_request + 1, per_request):
        body = json.dumps(request_body(route, sentences[start : start + per_request])).encode()
        head = (
            f"POST {route} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        bodies.append((head.encode() + body, per_request))
    return bodies


# the run


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile of `values`, in milliseconds."""
    return float(np.percentile(np.array(values), q) * 1000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--provider", default="cpu", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-request", type=int, default=1, help="sentences per request")
    parser.add_argument(
        "--route", default="/embed", choices=ROUTES, help="route of the served load"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--raw-threads",
        type=int,
        default=None,
        help="intra-op threads of the raw encoder (default: one per CPU)",
    )
    parser.add_argument(
        "--workers", default=None, help="the service's --workers (default: its own)"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive floor")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument(
        "server_flags", nargs="*", help="extra `python -m service` flags (after --)"
    )
    return parser.parse_args(argv)


@dataclass
class Raw:
    """The encoder in-process on one ordering of the sentences: its sweep and its rounds."""

    name: str
    rows: list[list[int]]
    sweep: dict[int, float]
    runs: list[float]
    runs_at_64: list[float]

    @property
    def best_batch(self) -> int:
        """The batch size of the highest throughput in the sweep."""
        return max(self.sweep, key=self.sweep.__getitem__)

    @property
    def median(self) -> float:
        """Median sentences per second over the rounds (at the best batch)."""
        return statistics.median(self.runs)

    @property
    def median_at_64(self) -> float:
        """Median sentences per second over the rounds at batch 64."""
        return statistics.median(self.runs_at_64)


@dataclass
class Figures:
    """Everything one run measured."""

    args: argparse.Namespace
    provider: str
    threads: int
    arrival: Raw
    by_length: Raw
    served_runs: list[LoadResult]
    low_load: LoadResult
    raw_single: list[float]
    naive: LoadResult | None
    limits: dict

    def summary(self) -> dict:
        """The figures as a flat dictionary (medians, ratios, latencies in ms)."""
        arrival, by_length = self.arrival.median, self.by_length.median
        by_length_64 = self.by_length.median_at_64
        served = statistics.median(r.throughput for r in self.served_runs)
        main_cpu = [r.main_cpu_per_request for r in self.served_runs if r.main_cpu_per_request]
        all_cpu = [r.cpu_per_request for r in self.served_runs if r.cpu_per_request]
        saturated = [x for r in self.served_runs for x in r.latencies]
        naive = self.naive.throughput if self.naive else None
        return {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "provider": self.provider,
            "raw_intra_op_threads": self.threads,
            "workers": self.args.workers or "default",
            "server_flags": self.args.server_flags,
            "clients": self.args.clients,
            "route": self.args.route,
            "sentences_per_request": self.args.per_request,
            "raw_arrival_sweep": {str(b): round(v, 1) for b, v in self.arrival.sweep.items()},
            "raw_by_length_sweep": {str(b): round(v, 1) for b, v in self.by_length.sweep.items()},
            "raw_arrival_best_batch": self.arrival.best_batch,
            "raw_by_length_best_batch": self.by_length.best_batch,
            "raw_arrival_sentences_per_s": round(arrival, 1),
            "raw_by_length_sentences_per_s": round(by_length, 1),
            "served_sentences_per_s": round(served, 1),
            "served_over_raw_arrival": round(served / arrival, 3),
            "served_over_raw_by_length": round(served / by_length, 3),
            "raw_by_length_batch_64_sentences_per_s": round(by_length_64, 1),
            "served_over_raw_by_length_batch_64": round(served / by_length_64, 3),
            "main_thread_cpu_ms_per_request": round(statistics.median(main_cpu) * 1000, 3)
            if main_cpu
            else None,
            "service_cpu_ms_per_request": round(statistics.median(all_cpu) * 1000, 3)
            if all_cpu
            else None,
            "served_p50_ms": round(percentile(saturated, 50), 2),
            "served_p99_ms": round(percentile(saturated, 99), 2),
            "served_errors": sum(r.errors for r in self.served_runs),
            "naive_sentences_per_s": round(naive, 1) if naive else None,
            "naive_over_raw_arrival": round(naive / arrival, 3) if naive else None,
            "low_load_p50_ms": round(percentile(self.low_load.latencies, 50), 2),
            "low_load_p99_ms": round(percentile(self.low_load.latencies, 99), 2),
            "raw_single_sentence_p50_ms": round(percentile(self.raw_single, 50), 2),
            "low_load_p50_over_raw_ms": round(
                percentile(self.low_load.latencies, 50) - percentile(self.raw_single, 50), 2
            ),
            "raw_arrival_runs": [round(x, 1) for x in self.arrival.runs],
            "raw_by_length_runs": [round(x, 1) for x in self.by_length.runs],
            "raw_by_length_batch_64_runs": [round(x, 1) for x in self.by_length.runs_at_64],
            "served_runs": [round(r.throughput, 1) for r in self.served_runs],
            "rounds": self.args.rounds,
            "seconds_per_measurement": self.args.seconds,
            "server_limits": self.limits,
        }


def measure(args: argparse.Namespace) -> Figures:
    """Raw sweeps, then alternating raw and served rounds, low-load latency, the naive floor.

    Two raw baselines: the sentences in arrival order (what a server is sent), and sorted by
    length (no padding at all: an offline best case that no online server reaches).
    """
    sentences = load_sentences()
    bundle = load_bundle(args.bundle)
    threads = args.raw_threads or available_cpus()
    engine = Engine(bundle, provider=args.provider, intra_op_threads=threads, runners=1)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    rows = tokenizer.encode(sentences).ids
    pad = tokenizer.pad_id
    print(
        f"bundle {bundle.name} {bundle.version} (dim {bundle.dim}) on {engine.provider}; "
        f"{len(sentences)} sentences, {np.mean([len(r) for r in rows]):.1f} tokens on average"
    )
    raws = []
    for name, ordered in (("arrival order", rows), ("sorted by length", sorted(rows, key=len))):
        sweep = {
            b: raw_throughput(engine, ordered, pad, b, min(1.5, args.seconds)) for b in BATCH_SIZES
        }
        raws.append(Raw(name, ordered, sweep, [], []))
        print(f"raw, {name:16} (sentences/s by batch size): {_row(sweep)}")

    flags = ["--provider", args.provider, *args.server_flags]
    if args.workers:
        flags += ["--workers", str(args.workers)]
    bodies = request_bodies(sentences, args.per_request, args.route)
    server = Server(args.bundle, free_port(), flags)
    asyncio.run(run_load(server.port, bodies, args.clients, 1.0))  # warm up
    served_runs = []
    for _ in range(args.rounds):
        for raw in raws:
            raw.runs.append(raw_throughput(engine, raw.rows, pad, raw.best_batch, args.seconds))
        by_length = raws[1]
        by_length.runs_at_64.append(raw_throughput(engine, by_length.rows, pad, 64, args.seconds))
        served_runs.append(measured_load(server, bodies, args.clients, args.seconds))
    low = asyncio.run(run_load(server.port, request_bodies(sentences, 1), 1, args.seconds))
    raw_single = raw_latencies(engine, rows)
    limits = server.info().get("limits", {})
    server.stop()

    naive = None
    if not args.no_naive:
        floor = Server(args.bundle, free_port(), [*flags, "--max-batch-rows", "1"])
        asyncio.run(run_load(floor.port, bodies, args.clients, 1.0))
        naive = asyncio.run(run_load(floor.port, bodies, args.clients, args.seconds))
        floor.stop()
    return Figures(
        args, engine.provider, threads, *raws, served_runs, low, raw_single, naive, limits
    )


def report(figures: Figures) -> None:
    """Print the table."""
    f = figures.summary()
    arrival, by_length = f["raw_arrival_sentences_per_s"], f["raw_by_length_sentences_per_s"]
    lines = [
        (f"raw encoder, batch {f['raw_arrival_best_batch']}, arrival order", arrival),
        (f"raw encoder, batch {f['raw_by_length_best_batch']}, sorted by length", by_length),
        (
            f"served {f['route']}, {f['clients']} clients x {f['sentences_per_request']}",
            f["served_sentences_per_s"],
        ),
    ]
    if f["naive_sentences_per_s"]:
        lines.append(("naive: one input per inference", f["naive_sentences_per_s"]))
    lines.insert(
        2, ("raw encoder, batch 64, sorted by length", f["raw_by_length_batch_64_sentences_per_s"])
    )
    at_64 = f["raw_by_length_batch_64_sentences_per_s"]
    print(f"\n{'':46} {'sentences/s':>12} {'x arrival':>10} {'x sorted':>9} {'x sorted@64':>12}")
    for name, value in lines:
        print(
            f"{name:46} {value:12.0f} {value / arrival:10.2f} {value / by_length:9.2f} "
            f"{value / at_64:12.2f}"
        )
    print(
        f"\nservice CPU per request at saturation: main threads (event loops) "
        f"{f['main_thread_cpu_ms_per_request']} ms, all threads {f['service_cpu_ms_per_request']} ms"
    )
    print(
        f"\nserved at saturation: p50 {f['served_p50_ms']} ms, p99 {f['served_p99_ms']} ms, "
        f"errors {f['served_errors']}"
    )
    print(
        f"low load (1 client, 1 sentence): p50 {f['low_load_p50_ms']} ms, "
        f"p99 {f['low_load_p99_ms']} ms; raw encoder on one sentence p50 "
        f"{f['raw_single_sentence_p50_ms']} ms (served adds {f['low_load_p50_over_raw_ms']} ms)"
    )
    print(
        f"medians of {f['rounds']} alternating rounds of {f['seconds_per_measurement']:g} s: "
        f"raw arrival {f['raw_arrival_runs']}, raw sorted {f['raw_by_length_runs']}, "
        f"served {f['served_runs']}; {f['provider']}; raw {f['raw_intra_op_threads']} intra-op "
        f"thread(s); served with {f['server_limits']}; {f['machine']}"
    )


def main(argv: list[str] | None = None) -> None:
    """Measure, print, and write JSON when asked."""
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    figures = measure(args)
    report(figures)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures.summary(), indent=2) + "\n")


def _row(sweep: dict[int, float]) -> str:
    return ", ".join(f"{b}: {v:.0f}" for b, v in sweep.items())


if __name__ == "__main__":
    main()
