"""The word-level tokenizer keeps GenSen's special ids and handles empty input."""

from __future__ import annotations

from models.vocabulary import SPECIAL_TOKENS, encode, pad_batch, train_tokenizer


def test_special_tokens_keep_gensen_ids():
    tokenizer = train_tokenizer(["the cat sat", "the dog ran ."], vocab_size=50)
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]


def test_lowercase_punctuation_unknown_and_empty():
    tokenizer = train_tokenizer(["the cat sat", "the dog ran ."], vocab_size=50)
    rows = encode(tokenizer, ["The CAT sat!", "", "zebra"], max_tokens=8)
    words = [tokenizer.token_to_id(w) for w in ("the", "cat", "sat")]
    assert rows[0] == [*words, 3]  # lowercased; "!" is split off and unknown
    assert rows[1] == [3]
    assert rows[2] == [3]


def test_truncation_and_padding():
    tokenizer = train_tokenizer(["a b c d e f"], vocab_size=50)
    (row,) = encode(tokenizer, ["a b c d e f"], max_tokens=4)
    assert len(row) == 4
    ids, lengths = pad_batch([row, row[:2]], pad_id=1)
    assert ids.shape == (2, 4)
    assert lengths.tolist() == [4, 2]
    assert ids[1, 2:].tolist() == [1, 1]
