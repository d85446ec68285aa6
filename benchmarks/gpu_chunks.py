"""On a GPU, is a batch faster whole or in length-sorted chunks of 16 rows? (torch, cuDNN GRU)

    python -m benchmarks.gpu_chunks [--bundle models/gensen-base]

encoder.onnx runs a batch in chunks of 16 length-sorted rows, which pays on a CPU. The service's
CUDA session overrides that to one chunk (service/engine.py). This measures the question on the
GPU at hand with the same architecture in torch (random weights: speed does not depend on them),
for use where ONNX Runtime has no CUDA provider to time the bundle itself. Shuffled real
sentences as in benchmarks/encoder.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from benchmarks.encoder import batches, rate, real_sentences
from models.encoder import EncoderConfig, GensenEncoder
from models.vocabulary import encode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, default=Path("models/gensen-base"))
    parser.add_argument("--chunk-rows", type=int, default=16)
    args = parser.parse_args()
    card = json.loads((args.bundle / "model.json").read_text())
    tokenizer = Tokenizer.from_file(str(args.bundle / card["files"]["tokenizer"]))
    rows = encode(tokenizer, real_sentences(4096), card["max_tokens"])
    config = EncoderConfig(
        vocab_size=card["vocab_size"], pooling=card["pooling"], **card["encoder"]
    )
    encoder = GensenEncoder(config).cuda().eval()

    def whole(ids: np.ndarray, lengths: np.ndarray) -> None:
        with torch.no_grad():
            encoder(torch.from_numpy(ids).cuda(), torch.from_numpy(lengths).cuda())
        torch.cuda.synchronize()

    def chunked(ids: np.ndarray, lengths: np.ndarray) -> None:
        order = np.argsort(lengths, kind="stable")
        with torch.no_grad():
            for start in range(0, len(order), args.chunk_rows):
                part = order[start : start + args.chunk_rows]
                cut = ids[part, : lengths[part].max()]
                encoder(torch.from_numpy(cut).cuda(), torch.from_numpy(lengths[part]).cuda())
        torch.cuda.synchronize()

    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {len(rows)} sentences")
    for size in (16, 64, 256):
        prepared = batches(rows, size)
        one, many = rate(whole, prepared, len(rows), 5), rate(chunked, prepared, len(rows), 5)
        print(
            f"batch {size:>3}: whole {one:8.0f} sentences/s, chunks of {args.chunk_rows} "
            f"{many:8.0f} ({many / one:.2f} x)"
        )


if __name__ == "__main__":
    main()
