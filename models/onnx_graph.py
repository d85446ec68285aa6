"""The encoder as a hand-built ONNX graph around ONNX's own bidirectional GRU operator.

Tracing the PyTorch module gives GRU nodes wrapped in per-row reversal gathers; here each
direction is one `GRU` node with `sequence_lens`, and ONNX Runtime's `reverse` pass starts at
each row's own last token, so padding never reaches a real row. One node per direction ran
about 10% faster than a single `bidirectional` node on a 2-core CPU (benchmarks/encoder.py).
Rows are sorted by length and run in chunks of `CHUNK_ROWS` inside a `Loop`, each chunk cut to
its own longest row: 1.9x faster than one padded batch on shuffled batches of 64.

Weights move from PyTorch's gate order (reset, update, new) to ONNX's (update, reset, hidden);
`linear_before_reset=1` is PyTorch's formulation of the candidate state.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from models.encoder import EncoderConfig, GensenEncoder

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; ONNX Runtime rejects the newest IR versions
CHUNK_ROWS = 16  # rows per length-sorted chunk (benchmarks/encoder.py --chunk-rows)
FEATURES = "features"  # the encoder's pooled states before its projection
PROJECTION = ["projection.weight", "projection.bias"]


def _onnx_gates(weight: torch.Tensor) -> np.ndarray:
    """PyTorch (r, z, n) blocks along dim 0 -> ONNX (z, r, h)."""
    r, z, n = weight.detach().float().numpy().reshape(3, -1, *weight.shape[1:])
    return np.concatenate([z, r, n])


def _gru_weights(encoder: GensenEncoder, name: str) -> dict[str, np.ndarray]:
    """ONNX W [1, 3H, in], R [1, 3H, H], B [1, 6H] of one direction, e.g. name "l0_reverse"."""
    gru = encoder.encoder
    bias = [_onnx_gates(getattr(gru, f"bias_{kind}_{name}")) for kind in ("ih", "hh")]
    return {
        "W": _onnx_gates(getattr(gru, f"weight_ih_{name}"))[None],
        "R": _onnx_gates(getattr(gru, f"weight_hh_{name}"))[None],
        "B": np.concatenate(bias)[None],
    }


class _Graph:
    """A small builder: named initializers and nodes, in order.

    `prefix` keeps the generated names of a subgraph's nodes apart from the outer graph's.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def int64(self, name: str, *values: int) -> str:
        """A 1-D int64 constant."""
        return self.const(name, np.array(values, dtype=np.int64))

    def op(
        self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attrs
    ) -> list[str]:
        names = (
            outputs
            if isinstance(outputs, list)
            else [f"{self.prefix}{op_type.lower()}_{len(self.nodes)}_{i}" for i in range(outputs)]
        )
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names


def build_encoder_graph(
    encoder: GensenEncoder, chunk_rows: int = CHUNK_ROWS, context_mark: int | None = None
) -> onnx.ModelProto:
    """encoder.onnx: input_ids int64 [batch, seq], lengths int64 [batch] -> embeddings [batch, dim],
    and with a projection also `features` [batch, 2H]: the pooled BiGRU states before it (what
    the windows of a long text are max-pooled over; `build_projection_graph` maps them on).

    `context_mark` (max pooling only; the vocabulary size): an id `context_mark + t` stands for
    token t read as context but left out of the pooling, so that a window of a long text gives
    only the states it reads with context on both sides (`service.windows`).

    A recurrent step costs the same for every row of a batch, padding included, so the graph
    sorts the rows by length and runs them in chunks of `chunk_rows`, each cut to its own longest
    row; the pooled vectors are put back in the caller's order before the projection. The
    embedding table is stored as float16 (callers round the torch weights the same way).
    """
    g = _Graph()
    g.const("zero_scalar", np.array(0, dtype=np.int64))
    g.const("one_scalar", np.array(1, dtype=np.int64))
    for name, value in (("zero", 0), ("one", 1), ("axis_0", 0)):
        g.int64(name, value)
    lengths = g.op("Max", ["lengths", "one"])[0]
    batch = g.op("Shape", [lengths])[0]  # [1]
    order = g.op("TopK", [lengths, batch], 2, largest=0, sorted=1)[1]  # shortest first
    # service/engine.py replaces this initializer, by its name, to run a batch whole on a GPU
    rows = g.op("Max", [g.op("Min", [batch, g.int64("chunk_rows", chunk_rows)])[0], "one"])[0]
    chunks = g.op("Div", [g.op("Sub", [g.op("Add", [batch, rows])[0], "one"])[0], rows])[0]
    total = g.op("Mul", [chunks, rows])[0]
    spare = g.op("Sub", [total, batch])[0]
    # the first chunk is filled up with copies of the shortest row, whose results are dropped
    shortest = g.op("Slice", [order, "zero", "one"])[0]
    padded_order = g.op("Concat", [g.op("Expand", [shortest, spare])[0], order], axis=0)[0]

    if encoder.config.pooling != "max":
        context_mark = None
    body = _chunk_body(g, encoder, padded_order, lengths, rows, context_mark)
    trips = g.op("Squeeze", [chunks, "axis_0"])[0]
    (stacked,) = g.op("Loop", [trips, ""], 1, body=body)  # [chunks, rows, width]
    width = 2 * encoder.config.hidden_dim
    pooled = g.op("Reshape", [stacked, g.int64("flatten_chunks", -1, width)])[0]
    pooled = g.op("Slice", [pooled, spare, total])[0]  # the copies dropped
    size = g.op("Squeeze", [batch, "axis_0"])[0]
    positions = g.op("Range", ["zero_scalar", size, "one_scalar"])[0]
    unsort = g.op("ScatterElements", [positions, order, positions], axis=0)[0]
    pooled = g.op("Gather", [pooled, unsort], axis=0)[0]
    features = None
    if encoder.projection is not None:
        g.op("Identity", [pooled], [FEATURES])
        features = width
        pooled = _project(g, pooled, *_projection_weights(encoder))
    g.op("Identity", [pooled], ["embeddings"])
    return _model(g, encoder.config.output_dim, features)


def build_projection_graph(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """projection.onnx: features float32 [batch, F] -> embeddings [batch, dim], the encoder's
    last linear layer on its own (`weight` [dim, F], `bias` [dim])."""
    g = _Graph()
    g.op("Identity", [_project(g, FEATURES, weight, bias)], ["embeddings"])
    return _model(
        g, weight.shape[0], inputs=[_tensor(FEATURES, weight.shape[1])], name="projection"
    )


def projection_weights(encoder: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """The projection's weight and bias stored in an encoder.onnx built here."""
    stored = {t.name: t for t in encoder.graph.initializer}
    return tuple(numpy_helper.to_array(stored[name]) for name in PROJECTION)  # type: ignore[return-value]


def encoder_from_graph(graph: onnx.ModelProto, config: EncoderConfig) -> GensenEncoder:
    """The GensenEncoder whose weights an encoder.onnx built here stores (the inverse of
    `build_encoder_graph`), so that a bundle's graph can be built again by newer code."""
    stored = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.graph.initializer
    }
    encoder = GensenEncoder(config).eval()
    gru = encoder.encoder
    with torch.no_grad():
        encoder.src_embedding.weight.copy_(stored["src_embedding.weight"].float())
        for layer in range(config.num_layers):
            for suffix in ("", "_reverse"):
                name = f"l{layer}{suffix}"
                weights = {k: stored[f"encoder.gru_{name}.{k}"][0] for k in ("W", "R", "B")}
                bias_ih, bias_hh = weights["B"].chunk(2)
                getattr(gru, f"weight_ih_{name}").copy_(_torch_gates(weights["W"]))
                getattr(gru, f"weight_hh_{name}").copy_(_torch_gates(weights["R"]))
                getattr(gru, f"bias_ih_{name}").copy_(_torch_gates(bias_ih))
                getattr(gru, f"bias_hh_{name}").copy_(_torch_gates(bias_hh))
        if encoder.projection is not None:
            encoder.projection.weight.copy_(stored[PROJECTION[0]])
            encoder.projection.bias.copy_(stored[PROJECTION[1]])
    return encoder


def _torch_gates(weight: torch.Tensor) -> torch.Tensor:
    """ONNX (z, r, h) blocks along dim 0 -> PyTorch (r, z, n)."""
    z, r, n = weight.reshape(3, -1, *weight.shape[1:])
    return torch.cat([r, z, n])


def _projection_weights(encoder: GensenEncoder) -> tuple[np.ndarray, np.ndarray]:
    projection = encoder.projection
    return projection.weight.detach().numpy(), projection.bias.detach().numpy()


def _project(g: _Graph, pooled: str, weight: np.ndarray, bias: np.ndarray) -> str:
    """Gemm of `pooled` [batch, F] with the projection's weights (stored under PROJECTION)."""
    names = [g.const(name, value) for name, value in zip(PROJECTION, (weight, bias), strict=True)]
    return g.op("Gemm", [pooled, *names], transB=1)[0]


def _tensor(name: str, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])


def _chunk_body(
    g: _Graph,
    encoder: GensenEncoder,
    order: str,
    lengths: str,
    rows: str,
    context_mark: int | None = None,
) -> onnx.GraphProto:
    """The Loop body: chunk i of the sorted rows -> pooled BiGRU states [rows, 2H] (ids from
    `context_mark` up read as context only: `build_encoder_graph`).

    Its constants are initializers of the outer graph `g`, which the body reads by name.
    """
    config = encoder.config
    hidden = config.hidden_dim
    b = _Graph(prefix="chunk_")
    first = b.op("Mul", [b.op("Unsqueeze", ["i", "axis_0"])[0], rows])[0]
    picked = b.op("Slice", [order, first, b.op("Add", [first, rows])[0]])[0]
    chunk_lengths = b.op("Gather", [lengths, picked])[0]
    longest = b.op("ReduceMax", [chunk_lengths], keepdims=1)[0]
    ids = b.op("Gather", ["input_ids", picked], axis=0)[0]
    ids = b.op("Slice", [ids, "zero", longest, "one"])[0]  # columns up to the chunk's longest
    pooled_mask = None
    if context_mark is not None:
        mark = g.const("context_mark", np.array(context_mark, dtype=np.int64))
        pooled_mask = b.op("Transpose", [b.op("Less", [ids, mark])[0]], perm=[1, 0])[0]  # [T, B]
        ids = b.op("Mod", [ids, mark])[0]
    seq_lens = b.op("Cast", [chunk_lengths], to=TensorProto.INT32)[0]
    table = encoder.src_embedding.weight.detach().half().numpy()
    words = b.op("Gather", [g.const("src_embedding.weight", table), ids])[0]
    x = b.op("Transpose", [b.op("Cast", [words], to=TensorProto.FLOAT)[0]], perm=[1, 0, 2])[0]
    g.int64("merge_directions", 0, 0, 2 * hidden)
    for layer in range(config.num_layers):
        outputs, finals = [], []
        for suffix, direction in (("", "forward"), ("_reverse", "reverse")):
            weights = _gru_weights(encoder, f"l{layer}{suffix}")
            names = [g.const(f"encoder.gru_l{layer}{suffix}.{k}", v) for k, v in weights.items()]
            states, last = b.op(
                "GRU",
                [x, *names, seq_lens],
                2,
                direction=direction,
                hidden_size=hidden,
                linear_before_reset=1,
            )
            outputs.append(states)
            finals.append(last)
        states = b.op("Concat", outputs, axis=1)[0]  # Y [T, 2, B, H]
        last = b.op("Concat", finals, axis=0)[0]  # Y_h [2, B, H]
        # -> [T, B, 2H]: both directions side by side, as PyTorch orders them
        x = b.op(
            "Reshape", [b.op("Transpose", [states], perm=[0, 2, 1, 3])[0], "merge_directions"]
        )[0]
    if config.pooling == "last":
        both = b.op("Transpose", [last], perm=[1, 0, 2])[0]  # [B, 2, H]
        pooled = b.op("Reshape", [both, g.int64("flatten_directions", 0, 2 * hidden)])[0]
    else:
        pooled = _masked_max(b, g, x, chunk_lengths, pooled_mask)
    b.op("Identity", ["cond"], ["cond_out"])
    b.op("Identity", [pooled], ["pooled"])
    return helper.make_graph(
        b.nodes,
        "chunk",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["rows", 2 * hidden]),
        ],
    )


def _masked_max(
    b: _Graph, g: _Graph, states: str, lengths: str, pooled_mask: str | None = None
) -> str:
    """Max over time of [T, B, D] states, reading only positions t < length of each row (and of
    those only where the bool [T, B] `pooled_mask` is set, when given).

    Nodes go to `b`, constants to `g`.
    """
    steps = b.op("Gather", [b.op("Shape", [states])[0], "zero_scalar"])[0]
    times = b.op("Range", ["zero_scalar", steps, "one_scalar"])[0]
    column = b.op("Unsqueeze", [times, g.int64("axis_1", 1)])[0]  # [T, 1]
    valid = b.op("Less", [column, lengths])[0]  # [T, B]
    if pooled_mask is not None:
        valid = b.op("And", [valid, pooled_mask])[0]
    valid = b.op("Unsqueeze", [valid, g.int64("axis_2", 2)])[0]
    minus_inf = g.const("minus_inf", np.array(-np.inf, dtype=np.float32))
    masked = b.op("Where", [valid, states, minus_inf])[0]
    return b.op("ReduceMax", [masked], axes=[0], keepdims=0)[0]


def _model(
    g: _Graph,
    dim: int,
    features: int | None = None,
    inputs: list[onnx.ValueInfoProto] | None = None,
    name: str = "gensen_encoder",
) -> onnx.ModelProto:
    """The graph of `g` as a checked model: the encoder's inputs unless `inputs` are given;
    outputs `embeddings` [batch, dim] and, when `features` is a width, `features`."""
    outputs = [_tensor("embeddings", dim)]
    if features is not None:
        outputs.append(_tensor(FEATURES, features))
    graph = helper.make_graph(
        g.nodes,
        name,
        inputs
        or [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        outputs,
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gensen-models"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
