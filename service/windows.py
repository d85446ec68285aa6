"""Inputs longer than the model's limit: cut into overlapping windows, embedded, pooled back.

A text of at most `max_tokens` tokens is one encoder row, as it always was. A longer one becomes
windows of `max_tokens` tokens, each overlapping the previous by `overlap` tokens so that no
sentence is only ever seen cut in two. Its vector is made as the model makes one text's: where
the bundle has pooled features (`Bundle.pools_features`), the max over its windows' features,
then the projection, which is what one window as long as the text would give with max pooling
(up to the states a GRU carries across a window's edge); for a bundle without them, the mean
of its windows' vectors, weighted by the new tokens each window brings.

A GRU starts each window afresh, so the states at a window's inner edges are read with little
context: those at the start of a later window are what a sentence start looks like, and they
weigh in the max as much as the text's real content. Where the encoder takes context marks
(`Bundle.context_mark`), each window therefore gives only the states it owns: two windows that
overlap split the overlap at its middle, and the tokens a window does not own are sent as
`id + context_mark`, read by the encoder but left out of its pooling. The text's vector is then
the max over states that each came from a window reading context on both sides of them.

Each window's own vector and character span can be asked for too (`window_vectors`). What a
request may ask instead:

- `truncate: true`: its first `max_tokens` tokens only (text-embeddings-inference's meaning),
  or its last with `truncation_direction: left`;
- `truncate: false`: refused with 413 when longer (also TEI's meaning);
- `truncate` left out: windows, so that nothing is lost.

Every window is a row of its own in the batcher, so a long text never makes the short texts
queued with it wait for more than one row of its length, and texts of one window (almost every
sentence) cost exactly what they cost before windows existed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    starts: list[int] | None = None  # each row's first token in its text (None: all 0)
    context_mark: int | None = None  # ids from here up are context only (None: nothing marked)

    def pool(
        self, rows: np.ndarray, dim: int, project: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> np.ndarray:
        """One vector [texts, dim] per text from the encoder's rows: [rows, dim], or [rows,
        dim + features] with `project` mapping pooled features to vectors. A text of one row
        takes that row's vector; the rows of a longer text are max-pooled over their features,
        then projected, or without features averaged with their weights."""
        if self.owners is None and rows.shape[1] == dim:
            return rows
        vectors = rows[:, :dim]
        if self.owners is None:
            return np.ascontiguousarray(vectors)
        if project is None or rows.shape[1] == dim:
            return self._mean(vectors)
        texts = int(self.owners[-1]) + 1
        first = np.searchsorted(self.owners, np.arange(texts))
        many = np.flatnonzero(np.bincount(self.owners, minlength=texts) > 1)
        pooled = np.ascontiguousarray(vectors[first])
        if len(many):
            features = np.maximum.reduceat(rows[:, dim:], first, axis=0)[many]
            pooled[many] = project(np.ascontiguousarray(features))
        return pooled

    def marked(self) -> list[int]:
        """The indices of rows that hold context marks (tokens left out of their pooling)."""
        if self.context_mark is None or self.owners is None:
            return []
        windows = np.bincount(self.owners)[self.owners]
        return np.flatnonzero(windows > 1).tolist()

    def plain(self, indices: Sequence[int]) -> list[list[int]]:
        """Rows `indices` without their context marks: what each window alone would be sent as."""
        mark = self.context_mark or 0
        return [[t - mark if t >= mark else t for t in self.rows[i]] for i in indices]

    def _mean(self, vectors: np.ndarray) -> np.ndarray:
        texts = int(self.owners[-1]) + 1  # type: ignore[index]
        pooled = np.zeros((texts, vectors.shape[1]), dtype=np.float32)
        np.add.at(pooled, self.owners, vectors * self.weights[:, None])  # type: ignore[index]
        return pooled

    def spans(self, texts: int) -> list[list[tuple[int, int]]]:
        """Each of the `texts` texts' rows as token ranges (start, stop) in it, in order."""
        out: list[list[tuple[int, int]]] = [[] for _ in range(texts)]
        owners = self.owners if self.owners is not None else range(len(self.rows))
        starts = self.starts or [0] * len(self.rows)
        for owner, start, row in zip(owners, starts, self.rows, strict=True):
            out[int(owner)].append((start, start + len(row)))
        return out


@dataclass(frozen=True, slots=True)
class WindowVector:
    """One window of a text: its character span [start, stop) in the text, its tokens, its
    vector (what the text's characters in that span alone would be embedded to)."""

    start: int
    stop: int
    tokens: int
    vector: np.ndarray


def window_vectors(
    windows: Windows,
    vectors: np.ndarray,
    texts: Sequence[str],
    offsets: Sequence[Sequence[tuple[int, int]]],
) -> list[list[WindowVector]]:
    """Each text's windows with their vectors ([rows, dim], in row order) and character spans
    (from each token's character `offsets`): a text's first window starts at its first
    character and its last ends at its last, so that the spans cover the text in order."""
    out: list[list[WindowVector]] = []
    row = 0
    for text, spans, marks in zip(texts, windows.spans(len(texts)), offsets, strict=True):
        last = len(spans) - 1
        items = []
        for k, (first, stop) in enumerate(spans):
            begin = 0 if k == 0 else marks[first][0]
            end = len(text) if k == last else marks[stop - 1][1]
            items.append(WindowVector(begin, end, stop - first, vectors[row]))
            row += 1
        out.append(items)
    return out


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
    context_mark: int | None = None,
) -> Windows:
    """The rows of `ids` for the encoder, by the request's `truncate` choice (module docstring);
    `keep_last`: truncation keeps a text's last tokens (TEI's `truncation_direction: left`);
    `context_mark`: the encoder's (`Bundle.context_mark`), to mark what each window does not own.

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
        starts = [len(row) - len(c) if keep_last else 0 for row, c in zip(ids, cut, strict=True)]
        truncated = sum(len(r) > size for r in ids)
        return Windows(cut, None, None, sum(map(len, cut)), truncated, starts)
    return _windows(ids, size, overlap, context_mark)


def _windows(ids: list[list[int]], size: int, overlap: int, context_mark: int | None) -> Windows:
    rows: list[list[int]] = []
    owners: list[int] = []
    weights: list[float] = []
    firsts: list[int] = []
    for text, row in enumerate(ids):
        starts = window_starts(len(row), size, overlap)
        covered = 0  # tokens of this text in the windows so far
        for k, start in enumerate(starts):
            end = min(start + size, len(row))
            window = row[start:end]
            if context_mark is not None and len(starts) > 1:
                owned = owned_range(starts, k, size, len(row))
                window = _mark_context(window, start, owned, context_mark)
            rows.append(window)
            owners.append(text)
            firsts.append(start)
            weights.append((end - max(start, covered)) / len(row))  # the tokens it adds
            covered = end
    return Windows(
        rows,
        np.asarray(owners, dtype=np.intp),
        np.asarray(weights, dtype=np.float32),
        sum(map(len, ids)),
        0,
        firsts,
        context_mark,
    )


def owned_range(starts: Sequence[int], k: int, size: int, length: int) -> tuple[int, int]:
    """The tokens [first, stop) of a text of `length` that window `k` of `starts` owns: from
    the middle of its overlap with the window before to the middle of its overlap with the
    next (the text's start and end for the first and last window)."""
    first = 0 if k == 0 else (starts[k] + min(starts[k - 1] + size, length)) // 2
    last = len(starts) - 1
    stop = length if k == last else (starts[k + 1] + min(starts[k] + size, length)) // 2
    return first, stop


def _mark_context(
    window: list[int], start: int, owned: tuple[int, int], context_mark: int
) -> list[int]:
    """`window` (from token `start` of its text) with the tokens outside `owned` marked."""
    first, stop = owned[0] - start, owned[1] - start
    head = [t + context_mark for t in window[:first]]
    tail = [t + context_mark for t in window[stop:]]
    return [*head, *window[first:stop], *tail]
