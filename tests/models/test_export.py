"""ONNX export: parity with torch, dynamic axes, float16 embedding storage, bundle contents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.encoder import PAD_ID, EncoderConfig, GensenEncoder
from models.export import (
    PROJECTION_FILE,
    export_encoder,
    rebuild_encoder,
    round_embeddings_to_half,
)
from models.onnx_graph import build_encoder_graph, encoder_from_graph
from models.vocabulary import pad_batch


@pytest.fixture(scope="module", params=["max", "last"])
def exported(request, tmp_path_factory):
    torch.manual_seed(1)
    encoder = GensenEncoder(EncoderConfig(300, 24, 16, 2, request.param, 20)).eval()
    path = tmp_path_factory.mktemp("export") / "encoder.onnx"
    export_encoder(encoder, path)
    return encoder, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


def _random_batch(rng, rows: int, longest: int):
    return pad_batch(
        [list(rng.integers(4, 300, rng.integers(1, longest + 1))) for _ in range(rows)], PAD_ID
    )


def test_onnx_matches_torch_on_random_mixed_length_batches(exported):
    encoder, session, _ = exported
    rng = np.random.default_rng(0)
    for rows, longest in [(1, 1), (5, 9), (16, 60), (37, 25), (64, 30)]:
        ids, lengths = _random_batch(rng, rows, longest)
        (got,) = session.run(["embeddings"], {"input_ids": ids, "lengths": lengths})
        with torch.no_grad():
            want = encoder(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
        assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("chunk_rows", [1, 4, 64])
def test_length_sorted_chunks_keep_rows_in_order(chunk_rows):
    torch.manual_seed(2)
    encoder = GensenEncoder(EncoderConfig(300, 24, 16, 1, "max", 20)).eval()
    round_embeddings_to_half(encoder)
    model = build_encoder_graph(encoder, chunk_rows)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for rows in (1, 5, 11):
        ids, lengths = _random_batch(rng, rows, 40)
        (got,) = session.run(["embeddings"], {"input_ids": ids, "lengths": lengths})
        with torch.no_grad():
            want = encoder(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
        assert np.abs(got - want).max() < 1e-5


def test_onnx_row_independent_of_padding_and_batch(exported):
    _, session, _ = exported
    rng = np.random.default_rng(1)
    ids, lengths = _random_batch(rng, 8, 50)
    (batch,) = session.run(["embeddings"], {"input_ids": ids, "lengths": lengths})
    for i in range(8):
        alone = ids[i : i + 1, : lengths[i]]
        (single,) = session.run(["embeddings"], {"input_ids": alone, "lengths": lengths[i : i + 1]})
        assert np.abs(single[0] - batch[i]).max() < 1e-5


def test_graph_has_symbolic_axes_and_half_embedding(exported):
    _, _, path = exported
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert all(dims), dims
    types = {i.name: i.data_type for i in graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types.values()


def test_tiny_bundle_matches_the_contract(tiny_bundle):
    card = json.loads((tiny_bundle / "model.json").read_text())
    for key in (
        "name",
        "version",
        "architecture",
        "dim",
        "pooling",
        "lowercase",
        "max_tokens",
        "files",
        "labels",
        "paraphrase_threshold",
        "training",
        "evaluation",
        "license",
    ):
        assert key in card
    for file in card["files"].values():
        assert (tiny_bundle / file).is_file()
    nli = ort.InferenceSession(
        str(tiny_bundle / card["files"]["nli"]), providers=["CPUExecutionProvider"]
    )
    u = np.random.default_rng(0).standard_normal((3, card["dim"])).astype(np.float32)
    (logits,) = nli.run(None, {"u": u, "v": u[::-1].copy()})
    assert logits.shape == (3, len(card["labels"]["nli"]))


@pytest.mark.parametrize("hidden", [0, 8])
def test_pair_heads_export_and_match_torch(hidden, tmp_path):
    from models.encoder import PairClassifier
    from models.export import export_head

    torch.manual_seed(0)
    head = PairClassifier(6, 3, hidden=hidden).eval()
    export_head(head, 6, tmp_path / "head.onnx")
    session = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    u, v = torch.randn(5, 6), torch.randn(5, 6)
    (logits,) = session.run(None, {"u": u.numpy(), "v": v.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, head(u, v).numpy(), atol=1e-5)


def test_features_projected_on_their_own_give_the_embeddings(exported):
    encoder, session, path = exported
    ids, lengths = _random_batch(np.random.default_rng(2), 9, 20)
    embeddings, features = session.run(None, {"input_ids": ids, "lengths": lengths})
    with torch.no_grad():
        pooled = encoder.pool(
            encoder.token_states(torch.from_numpy(ids), torch.from_numpy(lengths)),
            torch.from_numpy(lengths),
        ).numpy()
    np.testing.assert_allclose(features, pooled, atol=1e-5)
    projection = ort.InferenceSession(
        str(path.parent / PROJECTION_FILE), providers=["CPUExecutionProvider"]
    )
    (projected,) = projection.run(None, {"features": features})
    np.testing.assert_allclose(projected, embeddings, atol=1e-5)


def test_tiny_bundle_card_says_how_windows_pool(tiny_bundle):
    card = json.loads((tiny_bundle / "model.json").read_text())
    assert card["files"]["projection"] == PROJECTION_FILE
    assert card["windows"]["pooling"] == "max"


def test_rebuild_encoder_gives_an_older_bundle_the_new_graph_with_the_same_embeddings(
    tiny_bundle, tmp_path
):
    """A bundle exported before pooled features and context marks existed (no `features`
    output, no projection file, no card `windows`) gets the whole graph of this export from its
    own weights, and its embeddings do not move."""
    old = Path(shutil.copytree(tiny_bundle, tmp_path / "old"))
    card = json.loads((old / "model.json").read_text())
    del card["files"]["projection"], card["windows"]
    (old / "model.json").write_text(json.dumps(card))
    (old / PROJECTION_FILE).unlink()
    shape = card["encoder"]
    config = EncoderConfig(card["vocab_size"], **shape, pooling="max")
    graph = build_encoder_graph(encoder_from_graph(onnx.load(str(old / "encoder.onnx")), config))
    graph.graph.output.pop()  # features
    onnx.save(graph, str(old / "encoder.onnx"))
    rng = np.random.default_rng(3)
    ids, lengths = pad_batch([list(rng.integers(4, 60, n)) for n in (12, 3, 7)], PAD_ID)
    feeds = {"input_ids": ids, "lengths": lengths}
    before = ort.InferenceSession(str(old / "encoder.onnx")).run(None, feeds)
    assert len(before) == 1
    assert rebuild_encoder(old) == 0.0
    after = ort.InferenceSession(str(old / "encoder.onnx")).run(None, feeds)
    np.testing.assert_array_equal(after[0], before[0])
    (projected,) = ort.InferenceSession(str(old / PROJECTION_FILE)).run(
        None, {"features": after[1]}
    )
    np.testing.assert_allclose(projected, before[0], atol=1e-5)
    card = json.loads((old / "model.json").read_text())
    assert card["files"]["projection"] == PROJECTION_FILE
    assert card["windows"]["pooling"] == "max"
    assert card["windows"]["context_mark"] == card["vocab_size"]


def test_context_marked_tokens_are_read_but_not_pooled(tmp_path):
    """An id of vocab_size + t is token t to the GRU (the other tokens' states do not move) but
    is left out of the max pooling; a row without marks embeds as before."""
    torch.manual_seed(5)
    encoder = GensenEncoder(EncoderConfig(300, 24, 16, 2, "max", 20)).eval()
    export_encoder(encoder, tmp_path / "encoder.onnx")
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"))
    vocab = encoder.config.vocab_size
    rng = np.random.default_rng(4)
    ids, lengths = _random_batch(rng, 9, 40)
    pooled = rng.random(ids.shape) < 0.6
    pooled[:, 0] = True  # every row pools at least one token
    pooled[0] = True  # and the first row is not marked at all
    marked = np.where(pooled, ids, ids + vocab)
    feeds = {"input_ids": marked, "lengths": lengths}
    got, features = session.run(["embeddings", "features"], feeds)
    ids_t, lengths_t = torch.from_numpy(ids), torch.from_numpy(lengths)
    with torch.no_grad():
        states = encoder.token_states(ids_t, lengths_t)
        want = encoder.pool(states, lengths_t, torch.from_numpy(pooled))
        whole = encoder(ids_t, lengths_t)
    np.testing.assert_allclose(features, want.numpy(), atol=1e-5)
    np.testing.assert_allclose(got[0], whole[0].numpy(), atol=1e-5)
    assert np.abs(got[1:] - whole[1:].numpy()).max() > 1e-3  # the marks changed the others
