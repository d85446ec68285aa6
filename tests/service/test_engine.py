"""The ONNX Runtime engine: provider choice, the encoder and head contracts, warm-up checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.bundle import BundleError, load_bundle
from service.engine import ONE_CHUNK, Engine, EngineError
from service.tokenization import TextTokenizer

SENTENCES = ["a man is playing the guitar", "a dog", "two children are riding a horse on the beach"]


@pytest.fixture(scope="module")
def engine(tiny_bundle: Path) -> Engine:
    return Engine(load_bundle(tiny_bundle), provider="cpu")


@pytest.fixture(scope="module")
def tokenizer(tiny_bundle: Path) -> TextTokenizer:
    bundle = load_bundle(tiny_bundle)
    return TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)


def padded(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(rows), max(map(len, rows))), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, np.array([len(r) for r in rows], dtype=np.int64)


def test_cpu_provider_is_reported(engine: Engine) -> None:
    assert engine.provider == "cpu"


def test_auto_reports_what_it_got(tiny_bundle: Path) -> None:
    engine = Engine(load_bundle(tiny_bundle), provider="auto")
    assert engine.provider in {"cpu", "cuda"}


def test_cuda_asked_for_without_a_gpu_is_refused(tiny_bundle: Path) -> None:
    if Engine(load_bundle(tiny_bundle), provider="auto").provider == "cuda":
        pytest.skip("this machine runs CUDA")
    with pytest.raises(EngineError, match="cuda"):
        Engine(load_bundle(tiny_bundle), provider="cuda")


def test_embeddings_do_not_depend_on_batch_or_padding(
    engine: Engine, tokenizer: TextTokenizer
) -> None:
    rows = tokenizer.encode(SENTENCES).ids
    together = engine.embed(*padded(rows, tokenizer.pad_id))
    assert together.shape == (3, engine.dim)
    assert together.dtype == np.float32
    for i, row in enumerate(rows):
        alone = engine.embed(*padded([row], tokenizer.pad_id))
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


def test_heads_give_one_logit_per_label(engine: Engine) -> None:
    u = np.random.default_rng(0).standard_normal((4, engine.dim)).astype(np.float32)
    assert engine.predict("nli", u, u[::-1].copy()).shape == (4, 3)
    assert engine.predict("paraphrase", u, u).shape == (4, 2)


def test_warm_up_passes_on_a_good_bundle(engine: Engine, tokenizer: TextTokenizer) -> None:
    engine.warm_up(tokenizer.encode(SENTENCES).ids, tokenizer.pad_id)


def test_corrupt_onnx_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (copy / "encoder.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(BundleError, match=r"encoder.onnx does not load"):
        Engine(load_bundle(copy), provider="cpu")


def test_wrong_inputs_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    shutil.copy(copy / "nli.onnx", copy / "encoder.onnx")  # a head where the encoder should be
    with pytest.raises(BundleError, match="the contract is"):
        Engine(load_bundle(copy), provider="cpu")


def test_onnxruntime_is_imported_only_by_the_engine() -> None:
    service = Path(__file__).resolve().parents[2] / "service"
    importers = [
        p.relative_to(service).as_posix()
        for p in service.rglob("*.py")
        if "import onnxruntime" in p.read_text()
    ]
    assert importers == ["engine.py"]
    assert ort.get_available_providers()  # the runtime the engine wraps is installed


def _gru_runs_and_output(
    encoder: Path, tmp_path: Path, initializers: dict, ids: np.ndarray, lengths: np.ndarray
) -> tuple[int, np.ndarray]:
    """How many GRU nodes one run executed (from ONNX Runtime's profile), and its output."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / f"profile-{len(initializers)}")
    for name, value in initializers.items():
        options.add_initializer(name, value)
    session = ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input_ids": ids, "lengths": lengths})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sum(1 for e in events if e.get("args", {}).get("op_name") == "GRU")
    return runs, out


def test_one_chunk_override_runs_the_batch_as_one_chunk(tiny_bundle: Path, tmp_path: Path) -> None:
    """What the CUDA session gets: the same vectors, one GRU pass per direction instead of three."""
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(4, 50, rng.integers(1, 30))) for _ in range(40)]
    ids, lengths = padded(rows, pad=1)
    encoder = load_bundle(tiny_bundle).files["encoder"]
    chunked, want = _gru_runs_and_output(encoder, tmp_path, {}, ids, lengths)
    whole, got = _gru_runs_and_output(encoder, tmp_path, ONE_CHUNK, ids, lengths)
    assert (chunked, whole) == (2 * 3, 2)  # 40 rows: three chunks of 16, two directions each
    assert np.abs(got - want).max() < 1e-5
