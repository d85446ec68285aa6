"""Converter round trip on a small checkpoint in the original release's exact format."""

from __future__ import annotations

import json
import pickle

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.convert_gensen import convert, load_vocabulary

WORDS = ["<s>", "<pad>", "</s>", "<unk>", "the", "cat", "sat", "on", "mat", "Dog", "ran", "."]


def write_release(prefix, layers: int, embedding: int = 16, hidden: int = 12) -> nn.GRU:
    """What the original code saved: the Encoder's state dict and a protocol-2 vocabulary pickle."""
    torch.manual_seed(layers)
    src_embedding = nn.Embedding(len(WORDS), embedding)
    gru = nn.GRU(embedding, hidden, num_layers=layers, batch_first=True, bidirectional=True)
    state = {"src_embedding.weight": src_embedding.weight.data}
    state |= {f"encoder.{k}": v for k, v in gru.state_dict().items()}
    torch.save(state, f"{prefix}.model")
    vocab = {"word2id": {w: i for i, w in enumerate(WORDS)}, "id2word": dict(enumerate(WORDS))}
    with open(f"{prefix}_vocab.pkl", "wb") as handle:
        pickle.dump(vocab, handle, protocol=2)
    return gru.eval(), src_embedding


def reference_vector(
    gru: nn.GRU, embedding: nn.Embedding, words: list[str], pooling: str
) -> np.ndarray:
    """The original computation on one unpadded sentence wrapped in <s> ... </s>."""
    ids = torch.tensor([[WORDS.index(w) for w in ["<s>", *words, "</s>"]]])
    with torch.no_grad():
        states, last = gru(embedding(ids))
    if pooling == "last":
        return torch.cat([last[-2], last[-1]], dim=-1)[0].numpy()
    return states.max(dim=1).values[0].numpy()


@pytest.mark.parametrize(("layers", "pooling"), [(1, "last"), (2, "last"), (2, "max")])
def test_converted_bundle_reproduces_the_original_encoder(tmp_path, layers, pooling):
    gru, embedding = write_release(tmp_path / "release", layers)
    bundle = convert(tmp_path / "release", tmp_path / "bundle", pooling=pooling)
    card = json.loads((bundle / "model.json").read_text())
    assert card["dim"] == 2 * gru.hidden_size
    assert card["pooling"] == pooling
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    session = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    sentences = ["the cat sat on the mat .", "Dog ran", "the zebra sat"]
    encodings = tokenizer.encode_batch(sentences)
    longest = max(len(e.ids) for e in encodings)
    ids = np.ones((3, longest), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)] = e.ids
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    (vectors,) = session.run(["embeddings"], {"input_ids": ids, "lengths": lengths})
    # the embedding is stored as float16 in the bundle; compare against the same rounding
    with torch.no_grad():
        embedding.weight.copy_(embedding.weight.half().float())
    for vector, sentence in zip(vectors, sentences, strict=True):
        words = [w if w in WORDS else "<unk>" for w in sentence.split()]
        np.testing.assert_allclose(
            vector, reference_vector(gru, embedding, words, pooling), atol=1e-5
        )


def test_release_is_cased_by_default(tmp_path):
    write_release(tmp_path / "release", 1)
    bundle = convert(tmp_path / "release", tmp_path / "bundle")
    from tokenizers import Tokenizer

    tokens = Tokenizer.from_file(str(bundle / "tokenizer.json")).encode("Dog dog").tokens
    assert tokens == ["<s>", "Dog", "<unk>", "</s>"]


def test_wrong_special_token_ids_are_refused(tmp_path):
    with open(tmp_path / "bad_vocab.pkl", "wb") as handle:
        pickle.dump({"word2id": {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}}, handle, protocol=2)
    with pytest.raises(ValueError, match="special tokens"):
        load_vocabulary(tmp_path / "bad_vocab.pkl")
