"""The inference engine: with service/sessions.py, the only module that imports onnxruntime.

A small interface in the manner of text-embeddings-inference's `Backend`: `embed` runs the
encoder on a padded batch, `predict` runs a pair head, `project` maps pooled features to
embeddings (bundles with a projection graph), `warm_up` proves they work, and
`reserve_memory` takes the memory the largest batches need before serving starts. Everything
that depends on the device is decided here: the execution provider (`auto` takes CUDA where
ONNX Runtime can run it, else the CPU), the batch limits that fit it (`DeviceLimits`), and how
many batches run at once with how many threads each (`Parallelism`, measured when `auto`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from service.bundle import PROJECTION, Bundle, BundleError
from service.planner import pad_rows
from service.sessions import (
    CPU,
    CUDA,
    cuda_built_in,
    cuda_load_problem,
    open_session,
    preload_cuda_libraries,
    quiet_logs,
)

log = logging.getLogger("service.engine")

Head = Literal["nli", "paraphrase"]
ENCODER_INPUTS = ("input_ids", "lengths")
HEAD_INPUTS = ("u", "v")
FEATURES = "features"  # the encoder's optional output: pooled states before its projection
# An encoder built by models/onnx_graph.py sorts a batch by length and runs it in chunks of
# `chunk_rows` rows. That pays on a CPU, where every row costs; on a GPU rows run in
# parallel and each chunk is one more pass of sequential steps, so there the batch is one chunk.
# ONNX Runtime ignores the override for a graph without that initializer.
ONE_CHUNK = {"chunk_rows": ort.OrtValue.ortvalue_from_numpy(np.array([2**31 - 1], dtype=np.int64))}
# A row's embedding alone and inside a padded batch may differ by float rounding only: CUDA's
# kernels (TF32 included) differ by up to ~6e-4 per value, a relative distance under 1e-3; a
# padding bug (pads pooled, or a GRU run over them) moves a vector by tens of percent.
PARITY_TOLERANCE = 5e-3
# The batch that `auto` parallelism is measured on: rows of a typical sentence's length.
TUNE_ROWS = {"cpu": 64, "cuda": 512}
TUNE_LENGTH = 16
TUNE_SECONDS = 0.3


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceLimits:
    """Batch limits that fit a device, used where the settings leave them unset."""

    max_batch_rows: int
    batch_tokens: int
    # Whether the planner should group inputs by length: a CPU pays for every padded
    # position, a GPU runs the rows of a step in parallel and is better fed in arrival order.
    group_by_length: bool


DEVICE_LIMITS = {
    "cpu": DeviceLimits(max_batch_rows=64, batch_tokens=8192, group_by_length=True),
    "cuda": DeviceLimits(max_batch_rows=1024, batch_tokens=65536, group_by_length=False),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Parallelism:
    """How the encoder keeps the device busy: `runners` batches at once, each on its own
    thread, with `intra_op_threads` ONNX Runtime threads inside each run; a batch that runs
    while no other does (low load) takes `alone_threads` (0: the same as the others)."""

    runners: int
    intra_op_threads: int
    alone_threads: int = 0


class EngineError(Exception):
    """The engine cannot run as asked (for example CUDA asked for but not usable)."""


class Engine:
    """ONNX Runtime sessions of one bundle: the encoder and the two pair heads.

    `intra_op_threads` and `runners` left as None are chosen for the device: on the CPU by
    measuring each split of the cores between concurrent runs and threads per run.
    `encoder=False` opens the heads only (an HTTP worker whose encoder runs elsewhere).
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        provider: str = "auto",
        intra_op_threads: int | None = None,
        runners: int | None = None,
        encoder: bool = True,
    ) -> None:
        self.dim = bundle.dim
        self.features = 0  # width of the pooled features `embed` appends to each row (0: none)
        self._outputs = ["embeddings"]
        self._bundle = bundle
        self.provider = "cpu"
        self.parallelism = Parallelism(runners or 1, intra_op_threads or 1)
        self._encoder: ort.InferenceSession | None = None
        self._alone: ort.InferenceSession | None = None
        if encoder:
            opened = intra_op_threads or 1
            self._encoder, self.provider = _open_encoder(bundle, provider, opened)
            _check_io(bundle, "encoder", self._encoder, ENCODER_INPUTS, "embeddings")
            if bundle.pools_features:
                _check_io(bundle, "encoder", self._encoder, ENCODER_INPUTS, FEATURES)
                self._outputs.append(FEATURES)
            sessions = {opened: self._encoder}
            if intra_op_threads is None or runners is None:
                self._encoder, self.parallelism = self._tune(sessions, intra_op_threads, runners)
            if intra_op_threads is None:
                self._open_alone()
        head_providers = [CUDA, CPU] if self.provider == "cuda" else [CPU]
        self._heads = {
            head: open_session(bundle.files[head], head_providers, threads=1)
            for head in ("nli", "paraphrase")
        }
        for head, session in self._heads.items():
            _check_io(bundle, head, session, HEAD_INPUTS, "logits")
        self._projection: ort.InferenceSession | None = None
        if bundle.pools_features:
            self._projection = open_session(bundle.files[PROJECTION], [CPU], threads=1)
            _check_io(bundle, PROJECTION, self._projection, (FEATURES,), "embeddings")
            self.features = _width(self._projection)

    @property
    def device_limits(self) -> DeviceLimits:
        """Batch limits that fit the device the encoder runs on (and the bundle's graph: one
        that sorts a batch by length itself is fed in arrival order)."""
        limits = DEVICE_LIMITS[self.provider]
        if self._bundle.sorts_by_length:
            return dataclasses.replace(limits, group_by_length=False)
        return limits

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray, alone: bool = False) -> np.ndarray:
        """Pooled, unnormalised embeddings [rows, dim] of a padded int64 batch [rows, seq], each
        row followed by its pooled features where the bundle has them ([rows, dim + features]);
        `alone`: no other batch runs now, so this one may take every core."""
        session = self._alone if alone and self._alone is not None else self._encoder
        if session is None:
            raise EngineError("this engine has no encoder session (opened for the heads only)")
        feeds = {"input_ids": input_ids, "lengths": lengths}
        out = session.run(self._outputs, feeds)
        return out[0] if len(out) == 1 else np.concatenate(out, axis=1)

    def embeddings(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """`embed`'s embeddings alone [rows, dim] (without the pooled features)."""
        return self.embed(input_ids, lengths)[:, : self.dim]

    def project(self, features: np.ndarray) -> np.ndarray:
        """Embeddings [rows, dim] of pooled features [rows, features] (the encoder's last layer)."""
        if self._projection is None:
            raise EngineError("this bundle has no projection graph")
        return self._projection.run(["embeddings"], {FEATURES: features})[0]

    def predict(self, head: Head, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Logits [rows, classes] of a pair head on embeddings `u` and `v` [rows, dim]."""
        return self._heads[head].run(["logits"], {"u": u, "v": v})[0]

    def warm_up(self, sample: list[list[int]], pad_id: int) -> None:
        """Run real inferences and check the bundle keeps its contract; raise BundleError if not.

        `sample` holds token ids of at least two inputs of different lengths: each must embed to
        the same vector alone (on the session of lone batches, where there is one) as inside a
        padded batch (within PARITY_TOLERANCE, relative), and the heads must answer one logit
        per label.
        """
        ids, lengths = pad_rows(sample, pad_id)
        batch = self.embed(ids, lengths)
        where = f"bundle {self._bundle.path}"
        width = self.dim + self.features
        if batch.shape != (len(sample), width) or not np.isfinite(batch).all():
            raise BundleError(f"{where}: encoder gave {batch.shape}, not ({len(sample)}, {width})")
        self._check_projection(batch)
        batch = np.ascontiguousarray(batch[:, : self.dim])
        for i, row in enumerate(sample):
            one = np.array([row], dtype=np.int64)
            alone = self.embed(one, lengths[i : i + 1], alone=True)[0, : self.dim]
            distance = relative_distance(alone, batch[i])
            if distance > PARITY_TOLERANCE:
                raise BundleError(
                    f"{where}: encoder output depends on padding or other rows (input {i} alone "
                    f"and in a padded batch differ by {distance:.2e} relative, over "
                    f"{PARITY_TOLERANCE:g})"
                )
        labels = {"nli": self._bundle.nli_labels, "paraphrase": self._bundle.paraphrase_labels}
        for head in self._heads:
            logits = self.predict(head, batch, batch[::-1].copy())
            if logits.shape != (len(sample), len(labels[head])) or not np.isfinite(logits).all():
                raise BundleError(f"{where}: {head} head gave logits of shape {logits.shape}")

    def reserve_memory(self, max_rows: int, batch_tokens: int, runners: int) -> None:
        """Run `runners` of the batches that need the most memory at once: rows of the bundle's
        longest window, as many as the limits allow. ONNX Runtime's arena keeps what a batch
        took, so the process reaches its peak before it serves instead of minutes into serving.

        Raises EngineError when they do not run (a device too small for the limits): better
        refused at start-up than failing the first large batch under load.
        """
        length = self._bundle.max_tokens
        rows = max(1, min(max_rows, batch_tokens // length))
        ids = np.full((rows, length), 4, dtype=np.int64)
        lengths = np.full(rows, length, dtype=np.int64)
        try:
            with ThreadPoolExecutor(runners) as pool:  # .result() raises what a run raised
                for run in [pool.submit(self.embed, ids, lengths) for _ in range(runners)]:
                    run.result()
        except Exception as exc:  # onnxruntime's own errors, out of memory among them
            raise EngineError(
                f"{runners} concurrent batch(es) of {rows} rows × {length} tokens, the largest "
                f"the batch limits allow, do not run on {self.provider} ({exc}); lower "
                "--batch-tokens, --max-batch-rows or --batch-runners"
            ) from exc

    def _check_projection(self, rows: np.ndarray) -> None:
        """The projection of the encoder's features gives its embeddings (BundleError if not)."""
        if self._projection is None:
            return
        projected = self.project(np.ascontiguousarray(rows[:, self.dim :]))
        distance = max(
            relative_distance(a, b) for a, b in zip(rows[:, : self.dim], projected, strict=True)
        )
        if distance > PARITY_TOLERANCE:
            raise BundleError(
                f"bundle {self._bundle.path}: {PROJECTION} of the encoder's features differs "
                f"from its embeddings by {distance:.2e} relative"
            )

    def _open_alone(self) -> None:
        """On the CPU, with the threads left to `auto`: the session a batch takes when it runs
        alone. The split fastest for full batches (on 2 CPUs, 2 runs of 1 thread) is the
        slowest for a lone query, which then leaves cores idle. Its threads spin within a
        run (a short run is a few dozen parallel steps, and waking a sleeping thread for each
        step cost 0.2 ms of a lone 10-token query's 2.0 ms on 2 vCPUs, at the same CPU per run)
        and sleep once it returns."""
        cores = available_cpus()
        if self.provider != "cpu" or self.parallelism.intra_op_threads >= cores:
            return
        self._alone = open_session(self._bundle.files["encoder"], [CPU], cores, spinning=True)
        self.parallelism = dataclasses.replace(self.parallelism, alone_threads=cores)

    def _tune(
        self, sessions: dict[int, ort.InferenceSession], threads: int | None, runners: int | None
    ) -> tuple[ort.InferenceSession, Parallelism]:
        """The fastest split of the device between concurrent runs and threads per run
        (`sessions`: the encoder sessions open now, by intra-op threads; opened ones join it)."""
        cores = available_cpus()
        if self.provider == "cuda":  # threads do not matter there; overlap of runs may
            options = [Parallelism(r, 1) for r in ([runners] if runners else [1, 2])]
        else:
            options = _cpu_splits(cores, threads, runners)
        if len(options) == 1:
            chosen = options[0]
            return self._session_for(chosen.intra_op_threads, sessions), chosen
        rows = TUNE_ROWS[self.provider]
        ids = np.full((rows, TUNE_LENGTH), 4, dtype=np.int64)
        lengths = np.full(rows, TUNE_LENGTH, dtype=np.int64)
        speeds = {
            option: _rows_per_second(
                self._session_for(option.intra_op_threads, sessions), option.runners, ids, lengths
            )
            for option in options
        }
        chosen = max(speeds, key=speeds.__getitem__)
        log.info(
            "parallelism measured",
            extra={
                "cores": cores,
                "chosen": f"{chosen.runners}x{chosen.intra_op_threads}",
                "rows_per_s": {
                    f"{p.runners}x{p.intra_op_threads}": round(s) for p, s in speeds.items()
                },
            },
        )
        return sessions[chosen.intra_op_threads], chosen

    def _session_for(
        self, threads: int, sessions: dict[int, ort.InferenceSession]
    ) -> ort.InferenceSession:
        """The encoder with `threads` intra-op threads, from `sessions` or opened into it."""
        if threads not in sessions:
            providers = [CUDA, CPU] if self.provider == "cuda" else [CPU]
            initializers = ONE_CHUNK if self.provider == "cuda" else None
            path = self._bundle.files["encoder"]
            sessions[threads] = open_session(path, providers, threads, initializers)
        return sessions[threads]


def cuda_usable(bundle: Bundle, provider: str) -> bool:
    """Whether the encoder would run on CUDA with `provider` (probed on the small NLI head)."""
    if provider == "cpu" or not cuda_built_in():
        return False
    preload_cuda_libraries()
    with quiet_logs():
        session = open_session(bundle.files["nli"], [CUDA, CPU], threads=1)
    return CUDA in session.get_providers()


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖a‖ (a zero `a` counts as 1)."""
    norm = float(np.linalg.norm(a))
    return float(np.linalg.norm(a - b)) / (norm if norm > 0 else 1.0)


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (a pod's limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    return cpus


def _cpu_splits(cores: int, threads: int | None, runners: int | None) -> list[Parallelism]:
    """Ways to share `cores` between runs and threads, within what the settings fix."""
    if threads and runners:
        return [Parallelism(runners, threads)]
    if threads:
        return [Parallelism(max(1, cores // threads), threads)]
    if runners:
        return [Parallelism(runners, max(1, cores // runners))]
    splits = [Parallelism(r, cores // r) for r in range(1, cores + 1) if cores % r == 0]
    return splits or [Parallelism(1, 1)]


def _rows_per_second(
    session: ort.InferenceSession, runners: int, ids: np.ndarray, lengths: np.ndarray
) -> float:
    """Rows per second of `runners` threads each running the batch repeatedly."""
    feeds = {"input_ids": ids, "lengths": lengths}
    session.run(["embeddings"], feeds)
    done = [0] * runners
    stop_at = time.perf_counter() + TUNE_SECONDS

    def run(k: int) -> None:
        while time.perf_counter() < stop_at:
            session.run(["embeddings"], feeds)
            done[k] += len(ids)

    began = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - began)


def _open_encoder(bundle: Bundle, provider: str, threads: int) -> tuple[ort.InferenceSession, str]:
    """The encoder session on the asked provider and the provider it got ("cuda" or "cpu")."""
    path = bundle.files["encoder"]
    if provider == "cpu":
        return open_session(path, [CPU], threads), "cpu"
    if not cuda_built_in():
        if provider == "cuda":
            raise EngineError("provider cuda: this ONNX Runtime build has no CUDA provider")
        return open_session(path, [CPU], threads), "cpu"
    preload_cuda_libraries()
    with quiet_logs() if provider == "auto" else contextlib.nullcontext():
        session = open_session(path, [CUDA, CPU], threads, ONE_CHUNK)
    if CUDA in session.get_providers():
        return session, "cuda"
    why = cuda_load_problem()
    if provider == "cuda":
        raise EngineError(f"provider cuda: ONNX Runtime cannot run CUDA here ({why})")
    log.info("CUDA provider not usable here; running on CPU", extra={"reason": why})
    return open_session(path, [CPU], threads), "cpu"


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


def _width(session: ort.InferenceSession) -> int:
    """The fixed width of a session's first input ([batch, width])."""
    width = session.get_inputs()[0].shape[1]
    if not isinstance(width, int):
        raise BundleError(f"{PROJECTION} input has no fixed width ({width!r})")
    return width
