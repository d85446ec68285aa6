"""Inputs longer than the model's limit: cut into overlapping windows, embedded, pooled back.

A text of at most `max_tokens` tokens is one encoder row, as it always was. A longer one becomes
windows of `max_tokens` tokens, each overlapping the previous by `overlap` tokens so that no
sentence is only ever seen cut in two, and its vector is the mean of its windows' vectors,
weighted by the new tokens each window brings. What a request may ask instead:

- `truncate: true`: its first `max_tokens` tokens only (text-embeddings-inference's meaning),
  or its last with `truncation_direction: left`;
- `truncate: false`: refused with 413 when longer (also TEI's meaning);
- `truncate` left out: windows, so that nothing is lost.

Every window is a row of its own in the batcher, so a long text never makes the short texts
queued with it wait for more than one row of its length, and texts of one window (almost every
sentence) cost exactly what they cost before windows existed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.errors import InputTooLong


@dataclass(frozen=True, slots=True)
class Windows:
    """The encoder rows of a list of texts, and how to fold their vectors back into one per text."""

    rows: list[list[int]]
    owners: np.ndarray | None  # text index of each row; None when every text is one row
    weights: np.ndarray | None  # each row's share of its text's vector (None: one row per text)
    tokens: int  # tokens of the texts that were embedded (overlaps counted once)
    truncated: int  # texts cut at the limit because the request asked to truncate

    def pool(self, vectors: np.ndarray) -> np.ndarray:
        """One vector per text from one vector per row (rows of a text: their weighted mean)."""
        if self.owners is None:
            return vectors
        texts = int(self.owners[-1]) + 1
        pooled = np.zeros((texts, vectors.shape[1]), dtype=np.float32)
        np.add.at(pooled, self.owners, vectors * self.weights[:, None])
        return pooled


def default_overlap(size: int) -> int:
    """Tokens shared by consecutive windows of `size`: an eighth, so that no sentence is only
    ever seen cut in two (32 of the 256 of gensen-base)."""
    return size // 8


def window_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of the windows of `size` tokens covering `length` tokens, `overlap` apart."""
    if length <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]  # the last window ends at the text's end, full size


def split(
    ids: list[list[int]],
    size: int,
    truncate: bool | None,
    overlap: int,
    name_of: Callable[[int], str],
    keep_last: bool = False,
) -> Windows:
    """The rows of `ids` for the encoder, by the request's `truncate` choice (module docstring);
    `keep_last`: truncation keeps a text's last tokens (TEI's `truncation_direction: left`).

    Raises InputTooLong (naming the text by `name_of(i)`) when `truncate` is False and a text is
    longer than `size`.
    """
    if all(len(row) <= size for row in ids):
        return Windows(ids, None, None, sum(map(len, ids)), 0)
    if truncate is False:
        i = next(i for i, row in enumerate(ids) if len(row) > size)
        raise InputTooLong(
            f"{name_of(i)} has {len(ids[i])} tokens, over the model's {size}, and truncate is "
            "false (leave truncate out to embed it in windows, or set it true to cut it)",
            param=name_of(i),
        )
    if truncate:
        cut = [row[-size:] if keep_last else row[:size] for row in ids]
        return Windows(cut, None, None, sum(map(len, cut)), sum(len(r) > size for r in ids))
    return _windows(ids, size, overlap)


def _windows(ids: list[list[int]], size: int, overlap: int) -> Windows:
    rows: list[list[int]] = []
    owners: list[int] = []
    weights: list[float] = []
    for text, row in enumerate(ids):
        covered = 0  # tokens of this text in the windows so far
        starts = window_starts(len(row), size, overlap)
        for start in starts:
            rows.append(row[start : start + size])
            owners.append(text)
            end = min(start + size, len(row))
            weights.append((end - max(start, covered)) / len(row))  # the tokens it adds
            covered = end
    return Windows(
        rows,
        np.asarray(owners, dtype=np.intp),
        np.asarray(weights, dtype=np.float32),
        sum(map(len, ids)),
        0,
    )
