"""The command line: `python -m gensen_client embed INPUT OUTPUT ...` (see gensen_client.bulk)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gensen_client import bulk
from gensen_client.client import Client
from gensen_client.errors import GensenError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gensen_client")
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser(
        "embed", help="embed a file of texts", description=bulk.__doc__.split("\n\n")[0]
    )
    embed.add_argument("input", type=Path, help=f"one of {', '.join(bulk.INPUTS)}")
    embed.add_argument("output", type=Path, help=f"one of {', '.join(bulk.OUTPUTS)}")
    where = embed.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--url", action="append", help="service URL; repeat to spread the work over several"
    )
    where.add_argument("--local", type=Path, metavar="BUNDLE", help="embed in-process, no server")
    embed.add_argument("--api-key", default=None, help="or $GENSEN_API_KEY")
    embed.add_argument("--column", default="text", help="text column (.jsonl, .csv, .parquet)")
    embed.add_argument("--id-column", default=None, help="id column (default: line numbers)")
    embed.add_argument(
        "--windows", action="store_true", help="a row per window of each text, with its span"
    )
    embed.add_argument("--skip-bad", action="store_true", help="leave bad inputs out, counted")
    embed.add_argument("--chunk-size", type=int, default=4096, help="texts per resumable chunk")
    embed.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight per URL (default 8)"
    )
    embed.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import os

    args = parse_args(argv)
    client = None
    try:
        if args.local is not None:
            from gensen_client._local import local_embedder

            embed, facts = local_embedder(args.local, windows=args.windows)
        else:
            client = Client(
                args.url,
                api_key=args.api_key or os.environ.get("GENSEN_API_KEY"),
                timeout=args.timeout,
                concurrency=args.concurrency * len(args.url),
            )
            info = client.info()
            embed = client.embed_windows if args.windows else client.embed
            facts = {
                "model": f"{info['model_id']} {info.get('model_version', '')}".strip(),
                "max_chars": info["limits"]["max_input_chars"],
            }
        summary = bulk.embed_file(
            args.input,
            args.output,
            embed,
            windows=args.windows,
            column=args.column,
            id_column=args.id_column,
            max_chars=facts["max_chars"],
            skip_bad=args.skip_bad,
            chunk_size=args.chunk_size,
            settings={"model": facts["model"]},
        )
    except (bulk.BulkError, GensenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    summary["skipped"] = len(summary["skipped"])
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
