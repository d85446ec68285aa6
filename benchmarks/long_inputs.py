"""Long inputs through the running service: is their content kept, and do they slow short ones?

    python -m benchmarks.long_inputs [--bundle models/gensen-base] [--seconds 5] [--rounds 3]
        [--counts 10,18,24,36] [--kept-only] [--tree OTHER_CHECKOUT]
        [--out benchmarks/results/long-inputs.json]

Starts `python -m service` with its defaults on loopback (from `--tree`, another checkout, to
measure it side by side) and measures, with `/embed` and no request options (what a user gets):

0. Content kept after k unrelated sentences, for each k of `--counts`. A sentence S of an STS-B
   dev pair scored 4.5 or more (its first side, of 6 words or more) follows k SNLI test
   sentences U drawn at random; P is the other side of the pair. Kept is
   (cos(U + S, P) - cos(U, P)) / (cos(S, P) - cos(U, P)): 1 means nothing of S was lost.
   A single vector that treats the k + 1 sentences alike keeps at most
   1/sqrt(k + 1) of each; that limit is printed beside it. Every such pair of STS-B dev (116;
   `--pairs N` takes the first N), under `--draws` random draws of the unrelated sentences:
   the median over the pairs and the mean over the pairs, each the median over the draws.
1. Content kept. A sentence S of one of the first 60 such pairs is placed after at least
   `--filler-tokens` tokens of unrelated text U; P is the other side of the pair. Kept content is
   (cos(U + S, P) - cos(U, P)) / cos(S, P): the share of what S alone reaches that survives in
   the long text (1: all of it; 0: none, as when the input was cut before S). Two kinds of U:
   consecutive sentences of one Brown corpus document (a passage), and STS-B dev sentences of
   other pairs drawn at random (a mixed bag). Medians over the pairs.
2. Short inputs beside long ones. `--clients` connections post 8 short sentences a request;
   in alternate rounds `--long-clients` more post one text of about 3 windows each. Reported: the
   short requests' sentences/s and latency p50/p99 with and without the long ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
from pathlib import Path

import httpx
import numpy as np

from benchmarks.serve import (
    Server,
    free_port,
    load_sentences,
    percentile,
    request_bodies,
    run_load,
)
from models.data import data_root, read_snli, read_stsb, read_unlabeled
from service.bundle import load_bundle
from service.settings import DEFAULT_BUNDLE
from service.tokenization import TextTokenizer

RELEVANCE_PAIRS = 60  # measure 1's pairs unless `--pairs` says otherwise


def relevance_cases(
    tokenizer: TextTokenizer, filler_tokens: int, count: int, seed: int = 0
) -> dict[str, list[tuple[str, str, str]]]:
    """(unrelated text, relevant sentence, its paraphrase) per kind of unrelated text."""
    root = data_root()
    pairs = read_stsb(root, "dev")
    close = [p for p in pairs if p.label >= 4.5 and len(p.a.split()) >= 6][:count]
    others = [s for p in pairs if p.label < 1.0 for s in (p.a, p.b)]
    brown = [s for corpus, s in read_unlabeled(root) if corpus == "brown"][:20_000]
    rng = random.Random(seed)

    def filler(next_sentence) -> str:
        text: list[str] = []
        while len(tokenizer.encode([" ".join(text)]).ids[0]) < filler_tokens:
            text.append(next_sentence())
        return " ".join(text)

    cases: dict[str, list[tuple[str, str, str]]] = {"passage": [], "mixed": []}
    for pair in close:
        start = iter(range(rng.randrange(len(brown) - 200), len(brown)))
        cases["passage"].append((filler(lambda s=start: brown[next(s)]), pair.a, pair.b))
        cases["mixed"].append((filler(lambda: rng.choice(others)), pair.a, pair.b))
    return cases


def kept_after_sentences(
    url: str, tokenizer: TextTokenizer, counts: list[int], pairs: int | None, draws: int = 3
) -> list[dict[str, float]]:
    """Kept content (module docstring, 0) after k unrelated SNLI sentences, for each k: the
    median over `draws` seeded draws of the unrelated sentences of each figure."""
    root = data_root()
    close = [p for p in read_stsb(root, "dev") if p.label >= 4.5 and len(p.a.split()) >= 6]
    close = close[:pairs] if pairs else close
    unrelated = sorted({p.a for p in read_snli(root, "test")})
    rows = []
    for k in counts:
        by_draw, tokens = [], []
        for seed in range(draws):
            rng = random.Random(f"{seed}/{k}")
            cases = [(" ".join(rng.sample(unrelated, k)), p.a, p.b) for p in close]
            texts = [f"{u} {s}" for u, s, _ in cases]
            tokens += [len(ids) for ids in tokenizer.encode(texts).ids]
            by_draw.append(kept_content(url, cases, against_unrelated=True))
        figures = {name: statistics.median(d[name] for d in by_draw) for name in by_draw[0]}
        rows.append(
            {
                "unrelated_sentences": k,
                "tokens": round(statistics.median(tokens)),
                "limit": round(1 / (k + 1) ** 0.5, 3),
                **figures,
                "kept_by_draw": [d["kept"] for d in by_draw],
            }
        )
    return rows


def kept_content(
    url: str, cases: list[tuple[str, str, str]], against_unrelated: bool = False
) -> dict[str, float]:
    """Kept content (module docstring): its median and mean over the pairs, and the median
    cosines it is made of; `against_unrelated`: divided by cos(S, P) - cos(U, P) (measure 0),
    else by cos(S, P)."""

    def embed(texts: list[str]) -> np.ndarray:
        response = httpx.post(f"{url}/embed", json={"inputs": texts}, timeout=120)
        response.raise_for_status()
        return np.array(response.json())

    unrelated, relevant, paraphrase = (list(column) for column in zip(*cases, strict=True))
    long_text = [f"{u} {s}" for u, s in zip(unrelated, relevant, strict=True)]
    p = embed(paraphrase)
    alone = (embed(relevant) * p).sum(1)
    inside = (embed(long_text) * p).sum(1)
    without = (embed(unrelated) * p).sum(1)
    scale = alone - without if against_unrelated else alone
    kept = (inside - without) / scale
    return {
        "kept": round(float(np.median(kept)), 3),
        "kept_mean": round(float(np.mean(kept)), 3),
        "cos_alone": round(float(np.median(alone)), 3),
        "cos_in_long_text": round(float(np.median(inside)), 3),
        "cos_unrelated_alone": round(float(np.median(without)), 3),
        "pairs": len(cases),
    }


def long_bodies(tokenizer: TextTokenizer, windows: int) -> list[tuple[bytes, int]]:
    """Requests of one text each, about `windows` windows long (STS-B sentences run together)."""
    sentences = load_sentences()
    target = windows * tokenizer.max_tokens
    texts, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if len(tokenizer.encode([" ".join(current)]).ids[0]) >= target:
            texts.append(" ".join(current))
            current = []
    return [(body, 0) for body, _ in request_bodies(texts, 1)]  # 0: not counted as short


async def mixed_load(
    port: int,
    short: list[tuple[bytes, int]],
    long: list[tuple[bytes, int]],
    clients: int,
    long_clients: int,
    seconds: float,
):
    """Short-request figures while `long_clients` post long texts beside them (0: none)."""
    tasks = [run_load(port, short, clients, seconds)]
    if long_clients:
        tasks.append(run_load(port, long, long_clients, seconds))
    results = await asyncio.gather(*tasks)
    return results[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--filler-tokens", type=int, default=200)
    parser.add_argument(
        "--pairs", type=int, default=None, help="the first N pairs (default: every one)"
    )
    parser.add_argument(
        "--draws", type=int, default=3, help="draws of the unrelated sentences (measure 0)"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--long-clients", type=int, default=2)
    parser.add_argument("--long-windows", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--counts", default="10,18,24,36", help="unrelated sentences before S")
    parser.add_argument("--kept-only", action="store_true", help="skip the load measures")
    parser.add_argument("--tree", type=Path, default=None, help="run the service from here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [int(k) for k in args.counts.split(",")]

    bundle = load_bundle(args.bundle)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    tree = {"tree": args.tree} if args.tree else {}
    server = Server(args.bundle, free_port(), [], **tree)
    try:
        by_count = kept_after_sentences(server.url, tokenizer, counts, args.pairs, args.draws)
        print("unrelated  tokens  limit 1/sqrt(k+1)  kept (median, mean)  / limit")
        for row in by_count:
            k, limit, kept, mean = (
                row[n] for n in ("unrelated_sentences", "limit", "kept", "kept_mean")
            )
            print(
                f"{k:9}  {row['tokens']:6}  {limit:17}  {kept:6}, {mean:6}  "
                f"{kept / limit:.2f}, {mean / limit:.2f}"
            )
        if args.kept_only:
            if args.out:
                figures = {"bundle": f"{bundle.name} {bundle.version}", "kept_after": by_count}
                args.out.write_text(json.dumps(figures, indent=2) + "\n")
            return
        kept = {
            kind: kept_content(server.url, cases)
            for kind, cases in relevance_cases(
                tokenizer, args.filler_tokens, args.pairs or RELEVANCE_PAIRS
            ).items()
        }
        for kind, figures in kept.items():
            print(f"content kept after {args.filler_tokens}+ tokens of {kind} text: {figures}")
        short = request_bodies(load_sentences(), 8)
        long = long_bodies(tokenizer, args.long_windows)
        rounds: dict[str, list] = {"short only": [], "with long": []}
        asyncio.run(run_load(server.port, short, args.clients, 1.0))  # warm up
        for _ in range(args.rounds):
            for name, long_clients in (("short only", 0), ("with long", args.long_clients)):
                result = asyncio.run(
                    mixed_load(server.port, short, long, args.clients, long_clients, args.seconds)
                )
                rounds[name].append(result)
    finally:
        server.stop()
    mixed = {
        name: {
            "short_sentences_per_s": round(statistics.median(r.throughput for r in results)),
            "p50_ms": round(statistics.median(percentile(r.latencies, 50) for r in results), 2),
            "p99_ms": round(statistics.median(percentile(r.latencies, 99) for r in results), 2),
        }
        for name, results in rounds.items()
    }
    ratio = (
        mixed["with long"]["short_sentences_per_s"] / mixed["short only"]["short_sentences_per_s"]
    )
    print(
        f"short requests ({args.clients} clients x 8 sentences), beside {args.long_clients} "
        f"clients of {args.long_windows}-window texts: {mixed}; throughput ratio {ratio:.2f}"
    )
    if args.out:
        run = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        figures = {
            "bundle": f"{bundle.name} {bundle.version}",
            "kept_after": by_count,
            "kept": kept,
            "mixed": mixed,
        }
        args.out.write_text(json.dumps({**figures, "args": run}, indent=2) + "\n")


if __name__ == "__main__":
    main()
