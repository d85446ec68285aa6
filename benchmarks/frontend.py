"""The front end's CPU per request on each route, this checkout against another, side by side.

    python -m benchmarks.frontend --baseline PATH [--baseline-flags "--intra-op-threads 2"]
        [--routes /embed,/nli] [--per-request 8] [--rounds 3] [--seconds 5]

PATH is another checkout of this repository (`git worktree add /tmp/base COMMIT`). For each
route, each round starts the baseline's `python -m service` and this one's in turn (with the
same interpreter and bundle), loads each with `--clients` keep-alive clients for `--seconds`,
and reads the CPU that the main thread (the event loop) spent per request; the table gives
medians and the ratio this/baseline. Throughput is printed beside it, as the CPU a request
costs depends on the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

from benchmarks.serve import (
    ROUTES,
    Server,
    free_port,
    load_sentences,
    measured_load,
    request_bodies,
    run_load,
)
from service.settings import DEFAULT_BUNDLE, REPO_ROOT


def measure(
    tree: Path, flags: list[str], bodies: list, args: argparse.Namespace
) -> tuple[float, float]:
    """Main-thread CPU ms per request and sentences/s of the service of `tree` under load."""
    server = Server(args.bundle, free_port(), ["--provider", "cpu", *flags], tree=tree)
    try:
        asyncio.run(run_load(server.port, bodies, args.clients, 1.0))  # warm up
        result = measured_load(server, bodies, args.clients, args.seconds)
    finally:
        server.stop()
    return (result.main_cpu_per_request or 0.0) * 1000, result.throughput


def main(argv: list[str] | None = None) -> None:
    """Measure, print, and write JSON when asked."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frontend", description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout")
    parser.add_argument("--baseline-flags", default="", help="flags of the baseline's service")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sentences = load_sentences()
    trees = {"baseline": (args.baseline, args.baseline_flags.split()), "this": (REPO_ROOT, [])}
    table = {}
    for route in args.routes.split(","):
        bodies = request_bodies(sentences, args.per_request, route)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, (tree, flags) in trees.items():
                runs[name].append(measure(tree, flags, bodies, args))
        medians = {
            name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
            for name, rs in runs.items()
        }
        ratio = medians["this"][0] / medians["baseline"][0]
        table[route] = {
            **{f"{name}_main_thread_ms_per_request": round(m[0], 3) for name, m in medians.items()},
            **{f"{name}_sentences_per_s": round(m[1]) for name, m in medians.items()},
            "ratio": round(ratio, 2),
        }
        b, t = medians["baseline"], medians["this"]
        print(
            f"{route:16} main thread ms/request: baseline {b[0]:.3f} ({b[1]:.0f} sentences/s), "
            f"this {t[0]:.3f} ({t[1]:.0f} sentences/s): {ratio:.2f}x"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"baseline": str(args.baseline), "routes": table}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
