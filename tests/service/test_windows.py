"""Windows for inputs past the model's limit: where they start, how they pool, what truncate does."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InputTooLong
from service.windows import split, window_starts


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
    assert windows.pool(vectors) is vectors
    assert (windows.tokens, windows.truncated) == (5, 0)


def test_a_long_text_is_the_mean_of_its_windows_weighted_by_new_tokens() -> None:
    ids = [[1, 2], list(range(100, 114))]  # 2 tokens, then 14: windows [0:8] and [6:14]
    windows = split(ids, 8, None, 2, name_of)
    assert windows.rows == [[1, 2], ids[1][:8], ids[1][6:]]
    assert windows.owners.tolist() == [0, 1, 1]
    np.testing.assert_allclose(windows.weights, [1.0, 8 / 14, 6 / 14])
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 7.0]], dtype=np.float32)
    pooled = windows.pool(vectors)
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
