"""Batch planning: length groups of least cost, the oldest row first, budgets kept."""

from __future__ import annotations

import random

import numpy as np

from service.planner import MAX_STEP_COST, measure_step_cost, pad_rows, plan_batch, take_in_order

WIDE = 100_000


def test_the_oldest_row_is_always_planned() -> None:
    rng = random.Random(1)
    for _ in range(300):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 120))]
        budget, cap = rng.randint(40, 400), rng.randint(1, 16)
        picked = plan_batch(lengths, budget, cap, step_cost=rng.choice([0.0, 4.0, 50.0]))
        assert 0 in picked
        assert picked == sorted(set(picked))
        assert len(picked) <= cap
        assert len(picked) == 1 or max(lengths[i] for i in picked) * len(picked) <= budget


def test_similar_lengths_go_together() -> None:
    assert plan_batch([10, 11, 10, 12, 11], WIDE, 64) == [0, 1, 2, 3, 4]


def test_a_long_row_is_not_padded_into_a_short_batch() -> None:
    assert plan_batch([5, 5, 5, 5, 40], WIDE, 64, step_cost=4.0) == [0, 1, 2, 3]


def test_a_long_oldest_row_does_not_drag_short_ones() -> None:
    # together: 40 × (5 + 4) = 360; apart: 40 × (1 + 4) + 5 × (4 + 4) = 240
    assert plan_batch([40, 5, 5, 5, 5], WIDE, 64, step_cost=4.0) == [0]


def test_a_large_step_cost_batches_everything() -> None:
    assert plan_batch([40, 5, 5, 5, 5], WIDE, 64, step_cost=MAX_STEP_COST) == [0, 1, 2, 3, 4]


def test_row_cap_and_budget() -> None:
    assert len(plan_batch([8] * 100, WIDE, 16)) == 16
    assert len(plan_batch([8] * 100, 64, 64)) == 8
    assert plan_batch([50, 1, 1], batch_tokens=20, max_rows=8) == [0]


def test_groups_follow_length_order() -> None:
    rng = random.Random(2)
    lengths = [rng.randint(1, 60) for _ in range(200)]
    picked = plan_batch(lengths, 4096, 32, step_cost=4.0)
    chosen = sorted(lengths[i] for i in picked)
    others = [lengths[i] for i in range(len(lengths)) if i not in picked]
    # a contiguous stretch of the sorted lengths: nothing left out lies strictly inside it
    assert not any(chosen[0] < x < chosen[-1] for x in others)


class LinearEngine:
    """time ∝ length × (overhead + rows × per_row), as a recurrent encoder on a CPU."""

    def __init__(self, overhead: float, per_row: float) -> None:
        self.overhead, self.per_row = overhead, per_row

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray, alone: bool = False) -> np.ndarray:
        rows, length = input_ids.shape
        deadline = __import__("time").perf_counter() + length * (
            self.overhead + rows * self.per_row
        )
        while __import__("time").perf_counter() < deadline:
            pass
        return np.zeros((rows, 4), dtype=np.float32)


def test_measure_step_cost() -> None:
    cost = measure_step_cost(LinearEngine(overhead=4e-5, per_row=1e-5), token=5)
    assert 2.0 < cost < 8.0  # 4 rows' worth, measured on a busy-waiting fake


def test_free_rows_mean_the_largest_step_cost() -> None:
    assert measure_step_cost(LinearEngine(overhead=1e-4, per_row=0.0), token=5) >= MAX_STEP_COST / 2


def test_in_order_takes_the_oldest_rows_within_the_limits() -> None:
    assert take_in_order([3, 5, 2, 9], batch_tokens=100, max_rows=3) == [0, 1, 2]
    assert take_in_order([3, 5, 2, 9], batch_tokens=100, max_rows=8) == [0, 1, 2, 3]
    assert take_in_order([10, 10, 30], batch_tokens=40, max_rows=8) == [0, 1]  # 3 × 30 > 40
    assert take_in_order([50, 1], batch_tokens=20, max_rows=8) == [0]  # one row over the budget


def test_in_order_keeps_the_budget_on_random_queues() -> None:
    rng = random.Random(2)
    for _ in range(300):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 120))]
        budget, cap = rng.randint(40, 400), rng.randint(1, 16)
        picked = take_in_order(lengths, budget, cap)
        assert picked == list(range(len(picked)))
        assert 1 <= len(picked) <= cap
        assert len(picked) == 1 or max(lengths[i] for i in picked) * len(picked) <= budget


def test_pad_rows_pads_lists_and_arrays_alike() -> None:
    rows = [[5, 6, 7], [8], [9, 10]]
    ids, lengths = pad_rows(rows, pad_id=1)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 1, 1], [9, 10, 1]])
    np.testing.assert_array_equal(lengths, [3, 1, 2])
    assert ids.dtype == np.int64
    as_arrays = pad_rows([np.array(r, dtype=np.int32) for r in rows], pad_id=1)
    np.testing.assert_array_equal(as_arrays[0], ids)
