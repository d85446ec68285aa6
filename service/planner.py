"""Which queued inputs make the next batch: length grouping under a measured cost model.

A recurrent encoder pays for every padded position, and each time step also costs a fixed
overhead whatever the number of rows. So a batch of `rows` inputs padded to `longest` tokens
costs about longest × (rows + step_cost), where `step_cost` is that per-step overhead counted in
rows; it is measured on the real engine at start-up (`measure_step_cost`). The planner sorts
the queued inputs by length, cuts them into the consecutive groups of least total cost (dynamic
programming, within the token budget and the row cap), and runs the group holding the oldest
input first, so that every request progresses in arrival order.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

MAX_STEP_COST = 1000.0  # a device where rows are free (a GPU): batch as much as allowed


class Backend(Protocol):
    """What the planner and the batcher need of an engine."""

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray, alone: bool = False) -> np.ndarray:
        """Embeddings [rows, dim] of a padded batch (`alone`: no other batch runs now)."""
        ...


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows as a padded int64 batch [rows, longest] and their lengths [rows], filled in
    one masked assignment (not row by row: a batch of short rows spent more time in the
    per-row copies than in the encoder of a small model)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    if isinstance(rows[0], np.ndarray):  # rows from a worker's frame: views of one array
        flat = np.concatenate(rows)
    else:
        flat = np.fromiter(
            itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum())
        )
    ids[np.arange(ids.shape[1]) < lengths[:, None]] = flat
    return ids, lengths


def plan_batch(
    lengths: Sequence[int], batch_tokens: int, max_rows: int, step_cost: float = 4.0
) -> list[int]:
    """Indices (ascending) of the rows to batch next; row 0, the oldest, is always among them.

    Rows sorted by length are cut into consecutive groups minimising the summed
    longest × (rows + step_cost), each within `max_rows` and longest × rows ≤ `batch_tokens`
    (a single row longer than the budget makes a group alone); the group holding row 0 is returned.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cuts = _cheapest_cuts([lengths[i] for i in order], batch_tokens, max_rows, step_cost)
    anchor = order.index(0)
    end = len(order) - 1
    while cuts[end] > anchor:
        end = cuts[end] - 1
    return sorted(order[cuts[end] : end + 1])


def take_in_order(lengths: Sequence[int], batch_tokens: int, max_rows: int) -> list[int]:
    """The first rows in arrival order that fit `max_rows` and longest × rows ≤ `batch_tokens`
    (at least one): the plan for a device that runs a step's rows in parallel (a GPU)."""
    longest = 0
    for count, length in enumerate(lengths[:max_rows]):
        longest = max(longest, length)
        if count and longest * (count + 1) > batch_tokens:
            return list(range(count))
    return list(range(min(len(lengths), max_rows)))


def _cheapest_cuts(
    ordered: list[int], batch_tokens: int, max_rows: int, step_cost: float
) -> list[int]:
    """For each position j in `ordered` (ascending lengths): where its group starts in the best split."""
    n = len(ordered)
    best = np.zeros(n + 1)  # best[j]: least cost of the first j rows
    starts = list(range(n))
    for j, longest in enumerate(ordered):
        fit = max(1, batch_tokens // max(longest, 1))
        lo = max(0, j + 1 - min(max_rows, fit))
        first = np.arange(lo, j + 1)
        cost = best[lo : j + 1] + longest * (step_cost + (j + 1 - first))
        # among equal costs the latest start: full groups first, the remainder among the longest
        k = int(np.flatnonzero(cost <= cost.min() + 1e-9)[-1])
        best[j + 1] = cost[k]
        starts[j] = lo + k
    return starts


def measure_step_cost(backend: Backend, token: int, rows: int = 16, length: int = 16) -> float:
    """The backend's per-step overhead in rows, from batches of 1 and of `rows` inputs.

    time(r) ≈ length × (overhead + r × per_row): then step_cost = overhead / per_row.
    """

    def fastest(r: int) -> float:
        ids = np.full((r, length), token, dtype=np.int64)
        lengths = np.full(r, length, dtype=np.int64)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            backend.embed(ids, lengths)
            times.append(time.perf_counter() - start)
        return min(times)

    fastest(rows)  # warm
    one, many = fastest(1), fastest(rows)
    per_row = (many - one) / (rows - 1)
    if per_row <= 0:
        return MAX_STEP_COST
    return float(np.clip((one - per_row) / per_row, 0.0, MAX_STEP_COST))
