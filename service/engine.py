"""The inference engine: the only module that imports onnxruntime.

A small interface in the manner of text-embeddings-inference's `Backend`: `embed` runs the
encoder on a padded batch, `predict` runs a pair head, `warm_up` proves both work. The execution
provider is chosen here: `auto` takes CUDA where ONNX Runtime can run it, else the CPU.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import onnxruntime as ort

from service.bundle import Bundle, BundleError

log = logging.getLogger("service.engine")

Head = Literal["nli", "paraphrase"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ENCODER_INPUTS = ("input_ids", "lengths")
HEAD_INPUTS = ("u", "v")
# An encoder built by models/onnx_graph.py sorts a batch by length and runs it in chunks of
# `chunk_rows` rows. That pays on a CPU, where every row costs; on a GPU rows run in
# parallel and each chunk is one more pass of sequential steps, so there the batch is one chunk.
# ONNX Runtime ignores the override for a graph without that initializer.
ONE_CHUNK = {"chunk_rows": ort.OrtValue.ortvalue_from_numpy(np.array([2**31 - 1], dtype=np.int64))}


class EngineError(Exception):
    """The engine cannot run as asked (for example CUDA asked for but not usable)."""


class Engine:
    """ONNX Runtime sessions of one bundle: the encoder and the two pair heads."""

    def __init__(self, bundle: Bundle, *, provider: str = "auto", intra_op_threads: int = 1):
        self.dim = bundle.dim
        self._bundle = bundle
        self._encoder, self.provider = _open_encoder(bundle, provider, intra_op_threads)
        head_providers = [CUDA, CPU] if self.provider == "cuda" else [CPU]
        self._heads = {
            head: _session(bundle.files[head], head_providers, threads=1)
            for head in ("nli", "paraphrase")
        }
        _check_io(bundle, "encoder", self._encoder, ENCODER_INPUTS, "embeddings")
        for head, session in self._heads.items():
            _check_io(bundle, head, session, HEAD_INPUTS, "logits")

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Pooled, unnormalised embeddings [rows, dim] of a padded int64 batch [rows, seq]."""
        feeds = {"input_ids": input_ids, "lengths": lengths}
        return self._encoder.run(["embeddings"], feeds)[0]

    def predict(self, head: Head, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Logits [rows, classes] of a pair head on embeddings `u` and `v` [rows, dim]."""
        return self._heads[head].run(["logits"], {"u": u, "v": v})[0]

    def warm_up(self, sample: list[list[int]], pad_id: int) -> None:
        """Run real inferences and check the bundle keeps its contract; raise BundleError if not.

        `sample` holds token ids of at least two inputs of different lengths: each must embed to
        the same vector alone as inside a padded batch, and the heads must answer one logit per label.
        """
        longest = max(len(row) for row in sample)
        ids = np.full((len(sample), longest), pad_id, dtype=np.int64)
        for i, row in enumerate(sample):
            ids[i, : len(row)] = row
        lengths = np.array([len(row) for row in sample], dtype=np.int64)
        batch = self.embed(ids, lengths)
        where = f"bundle {self._bundle.path}"
        if batch.shape != (len(sample), self.dim) or not np.isfinite(batch).all():
            raise BundleError(
                f"{where}: encoder gave {batch.shape}, not ({len(sample)}, {self.dim})"
            )
        for i, row in enumerate(sample):
            alone = self.embed(np.array([row], dtype=np.int64), lengths[i : i + 1])
            if not np.allclose(alone[0], batch[i], atol=1e-4, rtol=1e-3):
                raise BundleError(f"{where}: encoder output depends on padding or other rows")
        labels = {"nli": self._bundle.nli_labels, "paraphrase": self._bundle.paraphrase_labels}
        for head in self._heads:
            logits = self.predict(head, batch, batch[::-1].copy())
            if logits.shape != (len(sample), len(labels[head])) or not np.isfinite(logits).all():
                raise BundleError(f"{where}: {head} head gave logits of shape {logits.shape}")


def _session(
    path: object,
    providers: list[str],
    threads: int,
    initializers: dict[str, ort.OrtValue] | None = None,
) -> ort.InferenceSession:
    """A session on `providers`; `initializers` replace the graph's constants of those names."""
    options = ort.SessionOptions()
    for name, value in (initializers or {}).items():
        options.add_initializer(name, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads would take the CPU the event loop and tokeniser need between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for broken files
        raise BundleError(f"bundle file {path} does not load in ONNX Runtime ({exc})") from exc


def _open_encoder(bundle: Bundle, provider: str, threads: int) -> tuple[ort.InferenceSession, str]:
    """The encoder session on the asked provider and the provider it got ("cuda" or "cpu")."""
    path = bundle.files["encoder"]
    if provider == "cpu":
        return _session(path, [CPU], threads), "cpu"
    if CUDA not in ort.get_available_providers():
        if provider == "cuda":
            raise EngineError("provider cuda: this ONNX Runtime build has no CUDA provider")
        return _session(path, [CPU], threads), "cpu"
    quiet = provider == "auto"
    if quiet:  # the failed CUDA probe would print a frightening error on every CPU machine
        ort.set_default_logger_severity(4)
    try:
        session = _session(path, [CUDA, CPU], threads, ONE_CHUNK)
    finally:
        ort.set_default_logger_severity(2)
    if CUDA in session.get_providers():
        return session, "cuda"
    if provider == "cuda":
        raise EngineError("provider cuda: ONNX Runtime cannot run CUDA here (no GPU or CUDA libs)")
    log.info("CUDA provider not usable here; running on CPU")
    return _session(path, [CPU], threads), "cpu"


def _check_io(
    bundle: Bundle, role: str, session: ort.InferenceSession, inputs: tuple[str, ...], output: str
) -> None:
    names = tuple(sorted(i.name for i in session.get_inputs()))
    outputs = [o.name for o in session.get_outputs()]
    if names != tuple(sorted(inputs)) or output not in outputs:
        raise BundleError(
            f"bundle {bundle.path}: {role} takes {list(names)} and gives {outputs}; "
            f"the contract is {list(inputs)} -> {output}"
        )


def runtime_version() -> str:
    """Version of ONNX Runtime, for /info."""
    return str(ort.__version__)
