"""Tokenisation with the bundle's tokenizer.json: whole texts, in order, off-loop for large input."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bundle import BundleError, load_bundle
from service.tokenization import INLINE_CHARS, TextTokenizer


@pytest.fixture
def tokenizer(tiny_bundle: Path) -> TextTokenizer:
    bundle = load_bundle(tiny_bundle)
    return TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)


def test_encodes_in_order_with_the_bundle_normaliser(tokenizer: TextTokenizer) -> None:
    lower, upper, short = tokenizer.encode(["a man is playing", "A MAN IS PLAYING", "a dog"]).ids
    assert lower == upper  # the tokenizer file lowercases
    assert len(short) < len(lower)


def test_texts_past_the_limit_are_tokenised_whole(tokenizer: TextTokenizer) -> None:
    long_text = " ".join(["the man"] * 100)
    encoded = tokenizer.encode([long_text, "a dog"])
    assert len(encoded.ids[0]) > tokenizer.max_tokens  # service.windows decides what to do


def test_pad_token_is_known(tokenizer: TextTokenizer) -> None:
    assert isinstance(tokenizer.pad_id, int)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_encoding_matches_for_small_and_large_requests(
    tokenizer: TextTokenizer, anyio_backend: str
) -> None:
    small = ["a man is playing"]
    large = ["a man is playing the guitar"] * (INLINE_CHARS // 10)
    assert (await tokenizer.encode_async(small)).ids == tokenizer.encode(small).ids
    assert (await tokenizer.encode_async(large)).ids == tokenizer.encode(large).ids


def test_unreadable_tokenizer_is_a_bundle_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("{}")
    with pytest.raises(BundleError, match="does not load"):
        TextTokenizer(path, 16)
