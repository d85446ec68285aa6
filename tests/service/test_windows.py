"""Windows for inputs past the model's limit: where they start, how they pool, what truncate does."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InputTooLong
from service.windows import split, window_starts, window_vectors


def name_of(i: int) -> str:
    return f"inputs[{i}]"


@pytest.mark.parametrize(
    ("length", "starts"),
    [(5, [0]), (8, [0]), (9, [0, 1]), (14, [0, 6]), (20, [0, 6, 12]), (21, [0, 6, 12, 13])],
)
def test_windows_cover_the_text_with_the_overlap(length: int, starts: list[int]) -> None:
    assert window_starts(length, size=8, overlap=2) == starts
    covered = set()
    for start in starts:
        covered |= set(range(start, min(start + 8, length)))
    assert covered == set(range(length))


def test_short_texts_are_one_row_each_and_pool_is_the_identity() -> None:
    ids = [[1, 2, 3], [4, 5]]
    windows = split(ids, 8, None, 2, name_of)
    assert windows.rows is ids
    assert windows.owners is None
    vectors = np.ones((2, 4), dtype=np.float32)
    assert windows.pool(vectors, 4) is vectors
    assert (windows.tokens, windows.truncated) == (5, 0)


def test_without_features_a_long_text_is_the_mean_of_its_windows_weighted_by_new_tokens() -> None:
    ids = [[1, 2], list(range(100, 114))]  # 2 tokens, then 14: windows [0:8] and [6:14]
    windows = split(ids, 8, None, 2, name_of)
    assert windows.rows == [[1, 2], ids[1][:8], ids[1][6:]]
    assert windows.owners.tolist() == [0, 1, 1]
    np.testing.assert_allclose(windows.weights, [1.0, 8 / 14, 6 / 14])
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 7.0]], dtype=np.float32)
    pooled = windows.pool(vectors, 2)
    np.testing.assert_allclose(pooled, [[1.0, 0.0], [16 / 14, 3.0]], rtol=1e-6)
    assert (windows.tokens, windows.truncated) == (16, 0)


def test_truncate_true_keeps_the_first_tokens() -> None:
    ids = [list(range(20)), [1]]
    windows = split(ids, 8, True, 2, name_of)
    assert windows.rows == [list(range(8)), [1]]
    assert windows.owners is None
    assert (windows.tokens, windows.truncated) == (9, 1)


def test_truncate_false_refuses_and_names_the_input() -> None:
    with pytest.raises(InputTooLong, match=r"inputs\[1\] has 9 tokens, over the model's 8"):
        split([[1], list(range(9))], 8, False, 2, name_of)
    assert split([list(range(8))], 8, False, 2, name_of).rows == [list(range(8))]


def test_with_features_a_long_text_is_the_projection_of_its_windows_max_features() -> None:
    ids = [list(range(100, 114)), [1, 2]]  # 14 tokens (windows [0:8] and [6:14]), then 2
    windows = split(ids, 8, None, 2, name_of)
    # each row: its vector (2 values), then its features (3 values)
    rows = np.array(
        [[1, 1, 0, 5, -1], [2, 2, 4, 1, -3], [9, 9, 7, 7, 7]],
        dtype=np.float32,
    )
    projected: list[np.ndarray] = []

    def project(features: np.ndarray) -> np.ndarray:
        projected.append(features)
        return features[:, :2] * 10

    pooled = windows.pool(rows, 2, project)
    np.testing.assert_array_equal(projected[0], [[4, 5, -1]])  # only the long text's max
    np.testing.assert_array_equal(pooled, [[40, 50], [9, 9]])  # the short text: its own vector


def test_short_texts_with_features_keep_their_vectors_and_skip_the_projection() -> None:
    windows = split([[1, 2, 3], [4]], 8, None, 2, name_of)
    rows = np.arange(10, dtype=np.float32).reshape(2, 5)
    pooled = windows.pool(rows, 2, lambda f: pytest.fail("projected"))
    np.testing.assert_array_equal(pooled, rows[:, :2])


def test_window_vectors_carry_spans_that_cover_the_text_in_order() -> None:
    text = " ".join(f"w{i}" for i in range(14)) + "  "  # 14 tokens, trailing spaces
    offsets = [(3 * i, 3 * i + 2) for i in range(10)] + [(30 + 4 * i, 33 + 4 * i) for i in range(4)]
    windows = split([list(range(14)), [7]], 8, None, 2, name_of)
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    found = window_vectors(windows, vectors, [text, "w"], [offsets, [(0, 1)]])
    long, short = found
    spans = [(w.start, w.stop, w.tokens) for w in long]
    assert spans == [(0, offsets[7][1], 8), (offsets[6][0], len(text), 8)]
    np.testing.assert_array_equal(long[1].vector, vectors[1])
    assert [(w.start, w.stop, w.tokens) for w in short] == [(0, 1, 1)]
    np.testing.assert_array_equal(short[0].vector, vectors[2])


def test_truncated_texts_say_where_their_window_lies() -> None:
    windows = split([list(range(20))], 8, True, 2, name_of, keep_last=True)
    assert windows.spans(1) == [[(12, 20)]]


@pytest.mark.parametrize("length", [9, 14, 20, 21, 40])
def test_with_context_marks_each_token_is_pooled_by_exactly_one_window(length: int) -> None:
    """Each window of a long text leaves the tokens a neighbour owns marked (id + mark): the
    unmarked tokens of its windows cover the text once, and in order."""
    mark = 1000
    text = list(range(100, 100 + length))
    windows = split([text, [1, 2]], 8, None, 2, name_of, context_mark=mark)
    owned: list[int] = []
    for row, (start, stop) in zip(windows.rows, windows.spans(2)[0], strict=False):
        assert [t % mark for t in row] == text[start:stop]  # every window reads all its tokens
        owned += [t for t in row if t < mark]
    assert owned == text
    assert windows.rows[-1] == [1, 2]  # a text of one window is never marked
    assert windows.marked() == list(range(len(windows.rows) - 1))
    assert windows.plain(windows.marked()) == [
        text[start:stop] for start, stop in windows.spans(2)[0]
    ]


def test_context_marks_split_an_overlap_at_its_middle() -> None:
    windows = split([list(range(14))], 8, None, 4, name_of, context_mark=100)
    # windows [0:8] and [4:12] overlap on 4..7, [4:12] and [6:14] on 6..11
    assert windows.rows == [
        [0, 1, 2, 3, 4, 5, 106, 107],
        [104, 105, 6, 7, 8, 109, 110, 111],
        [106, 107, 108, 9, 10, 11, 12, 13],
    ]


def test_without_a_context_mark_nothing_is_marked() -> None:
    windows = split([list(range(20))], 8, None, 2, name_of)
    assert windows.rows == [list(range(s, s + 8)) for s in (0, 6, 12)]
    assert windows.marked() == []
