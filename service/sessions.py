"""Opening ONNX Runtime sessions: their options, the CUDA libraries, and the CPU memory arena
that every session of the process shares.

One arena for all sessions: a batch that runs alone on its own session (see
`Engine._open_alone`) then reuses the memory the concurrent batches took, instead of holding
an arena of its own beside theirs.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort

from service.bundle import BundleError

log = logging.getLogger("service.sessions")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_arena_lock = threading.Lock()
_arena_registered = False


def open_session(
    path: object,
    providers: list[str],
    threads: int,
    initializers: dict[str, ort.OrtValue] | None = None,
    spinning: bool = False,
) -> ort.InferenceSession:
    """A session on `providers`; `initializers` replace the graph's constants of those names;
    `spinning`: its threads spin between the parallel steps of a run instead of sleeping
    (and stop when the run returns: left spinning, they took a core for tens of milliseconds
    after each run)."""
    _share_cpu_arena()
    options = ort.SessionOptions()
    for name, value in (initializers or {}).items():
        options.add_initializer(name, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.use_env_allocators", "1")
    # Spinning threads would take the CPU the event loop and tokeniser need between batches
    # under load; only the session of a batch that runs alone spins (see Engine._open_alone).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:  # between the steps of a run only: once it returns, the threads sleep
        options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for broken files
        raise BundleError(f"bundle file {path} does not load in ONNX Runtime ({exc})") from exc


def _share_cpu_arena() -> None:
    """Register, once per process, the CPU arena that sessions opened with
    `session.use_env_allocators` take their memory from (it grows by powers of two, as a
    session's own arena does, and keeps what it took: `Engine.reserve_memory` takes the most a
    batch can need at start-up, so that memory stays flat while serving)."""
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        memory = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg({"arena_extend_strategy": 0}))
        _arena_registered = True


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """ONNX Runtime's own log silenced: a failed CUDA probe would print a frightening error on
    every CPU machine (the engine logs the reason instead)."""
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from pip's `nvidia-*` packages (or torch's) where they are installed,
    so that no LD_LIBRARY_PATH is needed; what cannot be found is named by `cuda_load_problem`."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()):  # it prints each library it misses
        try:
            preload(cuda=True, cudnn=True, msvc=False)
        except Exception as exc:  # a partial install: the session's own failure says more
            log.debug("preloading CUDA libraries failed", extra={"reason": str(exc)})


def cuda_load_problem() -> str:
    """Why the CUDA provider library does not load: the first library the loader misses."""
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.is_file():
        return f"{library.name} is not installed"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return f"a library it needs is missing: {exc}"
    return "no usable GPU (the CUDA libraries load; see nvidia-smi)"


def cuda_built_in() -> bool:
    """Whether this ONNX Runtime build has the CUDA provider at all."""
    return CUDA in ort.get_available_providers()


def runtime_version() -> str:
    """Version of ONNX Runtime, for /info."""
    return str(ort.__version__)
