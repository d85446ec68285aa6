"""The ONNX Runtime engine: provider choice, the encoder and head contracts, warm-up checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.bundle import BundleError, load_bundle
from service.engine import (
    CUDA,
    DEVICE_LIMITS,
    ONE_CHUNK,
    PARITY_TOLERANCE,
    Engine,
    EngineError,
    Parallelism,
    available_cpus,
    pad_rows,
    relative_distance,
)
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
    assert together.shape == (3, engine.dim + engine.features)
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


def test_onnxruntime_is_imported_only_by_the_engine_and_its_sessions() -> None:
    service = Path(__file__).resolve().parents[2] / "service"
    importers = [
        p.relative_to(service).as_posix()
        for p in service.rglob("*.py")
        if "import onnxruntime" in p.read_text()
    ]
    assert sorted(importers) == ["engine.py", "sessions.py"]
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
    (out,) = session.run(["embeddings"], {"input_ids": ids, "lengths": lengths})
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


def _encoder_graph(vocab: int, dim: int, *, pool_pads: bool, batch_noise: float) -> onnx.ModelProto:
    """A bag-of-words encoder honouring the bundle contract, or breaking it on purpose.

    `pool_pads`: mean over every position, pads included (a real padding bug).
    `batch_noise`: add batch_noise × rows to every value (rounding-sized dependence on the
    batch, as CUDA's kernels have).
    """
    table = np.random.default_rng(0).standard_normal((vocab, dim)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["vectors"]),
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["rows"]),
        helper.make_node("Cast", ["rows"], ["rows_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["rows_f", "noise"], ["offset"]),
    ]
    if pool_pads:
        nodes.append(helper.make_node("ReduceMean", ["vectors", "axis1"], ["pooled"], keepdims=0))
    else:
        nodes += [
            helper.make_node("Gather", ["shape", "one"], ["steps"]),
            helper.make_node("Range", ["zero", "steps", "one"], ["positions"]),
            helper.make_node("Unsqueeze", ["lengths", "axis1"], ["limit"]),
            helper.make_node("Less", ["positions", "limit"], ["mask_b"]),
            helper.make_node("Cast", ["mask_b"], ["mask"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["vectors", "mask3"], ["kept"]),
            helper.make_node("ReduceSum", ["kept", "axis1"], ["summed"], keepdims=0),
            helper.make_node("Cast", ["limit"], ["count"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["summed", "count"], ["pooled"]),
        ]
    nodes.append(helper.make_node("Add", ["pooled", "offset"], ["embeddings"]))
    initializers = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array(batch_noise, dtype=np.float32), "noise"),
    ]
    graph = helper.make_graph(
        nodes,
        "test-encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", dim])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _bundle_with_encoder(
    tiny_bundle: Path, tmp_path: Path, model: onnx.ModelProto, features: bool = False
) -> Path:
    """A copy of the tiny bundle with `model` as its encoder; without `features`, its card no
    longer names the projection (a bundle exported before features existed)."""
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    onnx.save(model, copy / "encoder.onnx")
    if not features:
        card = json.loads((copy / "model.json").read_text())
        del card["files"]["projection"]
        (copy / "model.json").write_text(json.dumps(card))
    return copy


def test_rows_carry_the_features_that_the_projection_maps_to_the_embeddings(
    engine: Engine, tokenizer: TextTokenizer
) -> None:
    rows = engine.embed(*padded(tokenizer.encode(SENTENCES).ids, tokenizer.pad_id))
    assert engine.features == 2 * 16  # the tiny encoder's two directions of 16
    projected = engine.project(np.ascontiguousarray(rows[:, engine.dim :]))
    np.testing.assert_allclose(projected, rows[:, : engine.dim], atol=1e-5)


def test_a_bundle_without_features_gives_embeddings_only(
    tiny_bundle: Path, tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    vocab = tokenizer._tokenizer.get_vocab_size()
    model = _encoder_graph(vocab, load_bundle(tiny_bundle).dim, pool_pads=False, batch_noise=0.0)
    engine = Engine(load_bundle(_bundle_with_encoder(tiny_bundle, tmp_path, model)), provider="cpu")
    engine.warm_up(tokenizer.encode(SENTENCES).ids, tokenizer.pad_id)
    rows = engine.embed(*padded(tokenizer.encode(SENTENCES).ids, tokenizer.pad_id))
    assert (engine.features, rows.shape) == (0, (3, engine.dim))
    with pytest.raises(EngineError, match="no projection"):
        engine.project(rows)


def test_a_card_naming_a_projection_needs_the_features_output(
    tiny_bundle: Path, tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    vocab = tokenizer._tokenizer.get_vocab_size()
    model = _encoder_graph(vocab, load_bundle(tiny_bundle).dim, pool_pads=False, batch_noise=0.0)
    copy = _bundle_with_encoder(tiny_bundle, tmp_path, model, features=True)
    with pytest.raises(BundleError, match="features"):
        Engine(load_bundle(copy), provider="cpu")


def test_warm_up_refuses_an_encoder_that_pools_padding(
    tiny_bundle: Path, tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    bundle = load_bundle(tiny_bundle)
    vocab = tokenizer._tokenizer.get_vocab_size()
    model = _encoder_graph(vocab, bundle.dim, pool_pads=True, batch_noise=0.0)
    engine = Engine(load_bundle(_bundle_with_encoder(tiny_bundle, tmp_path, model)), provider="cpu")
    with pytest.raises(BundleError, match="depends on padding or other rows"):
        engine.warm_up(tokenizer.encode(SENTENCES).ids, tokenizer.pad_id)


def test_warm_up_takes_rounding_sized_differences(
    tiny_bundle: Path, tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    """Differences of the size CUDA's kernels make (~1e-4 per value) pass; the old absolute
    1e-4 check refused them, and with it every GPU."""
    bundle = load_bundle(tiny_bundle)
    vocab = tokenizer._tokenizer.get_vocab_size()
    model = _encoder_graph(vocab, bundle.dim, pool_pads=False, batch_noise=2e-4)
    engine = Engine(load_bundle(_bundle_with_encoder(tiny_bundle, tmp_path, model)), provider="cpu")
    rows = tokenizer.encode(SENTENCES).ids
    engine.warm_up(rows, tokenizer.pad_id)
    alone = engine.embed(*padded(rows[:1], tokenizer.pad_id))[0]
    together = engine.embed(*padded(rows, tokenizer.pad_id))[0]
    assert np.abs(alone - together).max() > 1e-4  # what the old check refused
    assert relative_distance(alone, together) < PARITY_TOLERANCE


def test_cuda_failure_names_the_missing_library(tiny_bundle: Path) -> None:
    """Where the CUDA provider is installed but its libraries are not, the error says which."""
    if CUDA not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has no CUDA provider")
    if Engine(load_bundle(tiny_bundle), provider="auto").provider == "cuda":
        pytest.skip("this machine runs CUDA")
    with pytest.raises(EngineError, match=r"lib\S+\.so[.\d]*"):
        Engine(load_bundle(tiny_bundle), provider="cuda")


def test_auto_parallelism_is_measured_and_fills_the_cpus(tiny_bundle: Path) -> None:
    engine = Engine(load_bundle(tiny_bundle), provider="cpu")
    chosen = engine.parallelism
    assert chosen.runners * chosen.intra_op_threads == available_cpus()


def test_fixed_parallelism_is_kept(tiny_bundle: Path) -> None:
    engine = Engine(load_bundle(tiny_bundle), provider="cpu", intra_op_threads=1, runners=3)
    assert engine.parallelism == Parallelism(runners=3, intra_op_threads=1)


def test_one_setting_fixed_the_other_fills_the_cpus(tiny_bundle: Path) -> None:
    engine = Engine(load_bundle(tiny_bundle), provider="cpu", intra_op_threads=1)
    assert engine.parallelism == Parallelism(runners=available_cpus(), intra_op_threads=1)


def test_device_limits_fit_the_device() -> None:
    cpu, cuda = DEVICE_LIMITS["cpu"], DEVICE_LIMITS["cuda"]
    assert cpu.group_by_length
    assert not cuda.group_by_length
    assert cuda.max_batch_rows >= 512
    assert cuda.batch_tokens >= 32768
    assert cpu.max_batch_rows == 64


def test_heads_only_engine_refuses_to_embed(tiny_bundle: Path) -> None:
    engine = Engine(load_bundle(tiny_bundle), provider="cpu", encoder=False)
    u = np.zeros((1, engine.dim), dtype=np.float32)
    assert engine.predict("nli", u, u).shape == (1, 3)
    with pytest.raises(EngineError, match="heads only"):
        engine.embed(np.ones((1, 2), dtype=np.int64), np.array([2]))


def test_a_graph_that_sorts_by_length_is_fed_in_arrival_order(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """The exported graph sorts each batch itself (its card says so): the CPU planner then
    takes rows in order; a bundle that does not say so gets length groups."""
    sorted_inside = Engine(load_bundle(tiny_bundle), provider="cpu", intra_op_threads=1, runners=1)
    assert load_bundle(tiny_bundle).sorts_by_length
    assert not sorted_inside.device_limits.group_by_length
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    card = json.loads((copy / "model.json").read_text())
    del card["encoder_graph"]
    (copy / "model.json").write_text(json.dumps(card))
    plain = Engine(load_bundle(copy), provider="cpu", intra_op_threads=1, runners=1)
    assert plain.device_limits.group_by_length


def test_a_batch_alone_takes_every_cpu_and_embeds_the_same(tiny_bundle: Path) -> None:
    if available_cpus() < 2:
        pytest.skip("one CPU: there is nothing more for a lone batch to take")
    engine = Engine(load_bundle(tiny_bundle), provider="cpu", runners=available_cpus())
    assert engine.parallelism.alone_threads == available_cpus()
    ids, lengths = pad_rows([[5, 6, 7], [8, 9]], pad_id=0)
    np.testing.assert_allclose(
        engine.embed(ids, lengths, alone=True), engine.embed(ids, lengths), rtol=1e-5, atol=1e-6
    )


def test_fixed_threads_are_kept_for_a_lone_batch_too(tiny_bundle: Path) -> None:
    engine = Engine(load_bundle(tiny_bundle), provider="cpu", intra_op_threads=1, runners=2)
    assert engine.parallelism.alone_threads == 0  # the same sessions as every batch


class RecordingEngine(Engine):
    """The real engine, recording each batch's shape, and failing past `most_tokens` as a device
    too small for the batch would."""

    def __init__(self, *args: object, most_tokens: int = 10**9, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.shapes: list[tuple[int, ...]] = []
        self.most_tokens = most_tokens

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray, alone: bool = False) -> np.ndarray:
        self.shapes.append(input_ids.shape)
        if input_ids.size > self.most_tokens:
            raise RuntimeError("Failed to allocate memory")
        return super().embed(input_ids, lengths, alone)


@pytest.mark.parametrize(
    ("max_rows", "batch_tokens", "runners", "shape"),
    [(64, 8192, 2, (64, 32)), (8, 8192, 1, (8, 32)), (64, 256, 2, (8, 32)), (64, 16, 1, (1, 32))],
)
def test_memory_is_reserved_with_the_largest_batches_on_every_runner(
    tiny_bundle: Path, max_rows: int, batch_tokens: int, runners: int, shape: tuple[int, int]
) -> None:
    engine = RecordingEngine(
        load_bundle(tiny_bundle), provider="cpu", intra_op_threads=1, runners=2
    )
    engine.reserve_memory(max_rows, batch_tokens, runners)
    assert engine.shapes == [shape] * runners  # rows of the bundle's whole window (32 tokens)


def test_limits_the_device_cannot_run_are_refused_at_start_up(tiny_bundle: Path) -> None:
    engine = RecordingEngine(
        load_bundle(tiny_bundle), provider="cpu", intra_op_threads=1, runners=2, most_tokens=1024
    )
    with pytest.raises(
        EngineError, match=r"2 concurrent batch\(es\) of 64 rows × 32 tokens.*--batch-tokens"
    ):
        engine.reserve_memory(64, 8192, 2)
    engine.reserve_memory(32, 1024, 2)  # within what it can run
