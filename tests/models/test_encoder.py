"""The encoder: original parameter names, and vectors independent of padding and batch-mates."""

from __future__ import annotations

import pytest
import torch

from models.encoder import EncoderConfig, GensenEncoder, PairClassifier, reversal_index


def _encoder(pooling: str, layers: int = 1, projection: int | None = 12) -> GensenEncoder:
    torch.manual_seed(0)
    return GensenEncoder(EncoderConfig(50, 10, 8, layers, pooling, projection)).eval()


def test_parameter_names_follow_the_original_release():
    names = set(_encoder("max", layers=2, projection=None).state_dict())
    assert {"src_embedding.weight", "encoder.weight_ih_l0", "encoder.weight_hh_l0_reverse"} <= names
    assert "encoder.bias_ih_l1_reverse" in names


def test_reversal_index_reverses_within_each_length():
    index = reversal_index(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]


@pytest.mark.parametrize(("pooling", "layers"), [("max", 1), ("last", 1), ("max", 2), ("last", 2)])
def test_sentence_vector_ignores_padding_and_batch(pooling: str, layers: int):
    encoder = _encoder(pooling, layers)
    short = torch.tensor([[5, 6, 7]])
    batch = torch.full((3, 40), 1, dtype=torch.int64)
    batch[0, :3] = short[0]
    batch[1] = torch.randint(4, 50, (40,))
    batch[2, :25] = torch.randint(4, 50, (25,))
    with torch.no_grad():
        alone = encoder(short, torch.tensor([3]))[0]
        together = encoder(batch, torch.tensor([3, 40, 25]))[0]
    assert torch.allclose(alone, together, atol=1e-5)


def test_padding_value_does_not_leak_into_max_pooling():
    encoder = _encoder("max")
    ids = torch.tensor([[5, 6, 7, 1, 1, 1]])
    other = ids.clone()
    other[0, 3:] = 9  # garbage past the length must not matter either
    with torch.no_grad():
        assert torch.allclose(
            encoder(ids, torch.tensor([3])), encoder(other, torch.tensor([3])), atol=1e-6
        )


def test_output_width_is_projection_or_both_directions():
    assert _encoder("max", projection=12)(torch.tensor([[4, 5]]), torch.tensor([2])).shape == (
        1,
        12,
    )
    assert _encoder("last", projection=None)(torch.tensor([[4, 5]]), torch.tensor([2])).shape == (
        1,
        16,
    )


def test_pair_classifier_is_scale_invariant():
    torch.manual_seed(0)
    head = PairClassifier(6, 3, hidden=8).eval()
    u, v = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(head(u, v), head(3 * u, 0.5 * v), atol=1e-5)
