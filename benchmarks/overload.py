"""Overload from many pooled keep-alive clients, each run against a fresh service: which
answers and which connection errors come back (a benchmark, not a test).

    python -m benchmarks.overload [--runs 10] [--clients 256] [--per-request 64]
        [--seconds 10] [--bundle models/gensen-base] [--out FILE] [-- extra service flags]

Each run starts `python -m service` with its defaults (plus any flags after `--`) on loopback,
and `--clients` clients post `--per-request` sentences a request for `--seconds`, as a client
library does: through one httpx connection pool (keep-alive), each client waiting what
`Retry-After` asks after a 429 or 503 before its next request. Such a client leaves pooled
connections idle for seconds while it backs off; a server that closes idle connections sooner
than the client expects resets some of them under the client's next request. The table counts,
per run, the answers by status, the 429s and 503s without `Retry-After`, and the connection
errors (resets, closed connections, timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from pathlib import Path

import httpx

from benchmarks.serve import Server, free_port, load_sentences
from service.settings import DEFAULT_BUNDLE

BACKOFF_CAP_S = 5.0  # a client waits at most this long after a 429, whatever it is told


async def client_loop(
    http: httpx.AsyncClient, body: dict, stop_at: float, counts: collections.Counter
) -> None:
    """Post `body` until `stop_at`, honouring Retry-After; count what comes back."""
    while time.monotonic() < stop_at:
        try:
            response = await http.post("/embed", json=body)
        except httpx.HTTPError as exc:
            counts[f"connection error: {type(exc).__name__}"] += 1
            continue
        counts[str(response.status_code)] += 1
        if response.status_code in (429, 503):
            retry_after = response.headers.get("retry-after")
            if retry_after is None:
                counts[f"{response.status_code} without Retry-After"] += 1
                continue
            await asyncio.sleep(min(float(retry_after), BACKOFF_CAP_S, stop_at - time.monotonic()))


async def one_run(url: str, sentences: list[str], args: argparse.Namespace) -> dict[str, int]:
    """The counts of one run of `args.seconds` against the service at `url`."""
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    counts: collections.Counter = collections.Counter()
    stop_at = time.monotonic() + args.seconds
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(
            *(
                client_loop(
                    http, {"inputs": _texts(sentences, k, args.per_request)}, stop_at, counts
                )
                for k in range(args.clients)
            )
        )
    return dict(sorted(counts.items()))


def _texts(sentences: list[str], k: int, count: int) -> list[str]:
    start = (k * count) % max(1, len(sentences) - count)
    return sentences[start : start + count]


def main(argv: list[str] | None = None) -> None:
    """Run, print a line a run, and write JSON when asked."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--per-request", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("server_flags", nargs="*", help="extra `python -m service` flags")
    args = parser.parse_args(argv)
    sentences = load_sentences()
    runs = []
    for k in range(args.runs):
        server = Server(args.bundle, free_port(), ["--provider", "cpu", *args.server_flags])
        try:
            counts = asyncio.run(one_run(server.url, sentences, args))
        finally:
            server.stop()
        runs.append(counts)
        print(f"run {k + 1}: {counts}", flush=True)
    failed = [r for r in runs if any(not key.isdigit() for key in r)]
    statuses = sorted({key for r in runs for key in r if key.isdigit()})
    print(
        f"{len(runs)} runs, {args.clients} clients x {args.per_request} sentences, "
        f"{args.seconds:g} s each: statuses {statuses}; runs with a connection error or an "
        f"answer without Retry-After: {len(failed)}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "clients": args.clients,
            "sentences_per_request": args.per_request,
            "seconds": args.seconds,
            "server_flags": args.server_flags,
            "runs": runs,
            "statuses": statuses,
            "runs_with_a_connection_error": len(failed),
        }
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
