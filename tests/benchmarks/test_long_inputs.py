"""benchmarks.long_inputs end to end on the tiny bundle: kept content and the mixed load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import run_benchmark

pytestmark = pytest.mark.slow


def test_long_inputs_benchmark_writes_its_figures(
    tiny_bundle: Path, tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "long.json"
    run_benchmark(
        *("benchmarks.long_inputs", "--bundle", str(tiny_bundle), "--pairs", "5"),
        *("--filler-tokens", "40", "--seconds", "0.3", "--rounds", "1", "--clients", "4"),
        *("--out", str(out)),
    )
    figures = json.loads(out.read_text())
    assert set(figures["kept"]) == {"passage", "mixed"}
    assert figures["kept"]["passage"]["pairs"] == 5
    after = figures["kept_after"]
    assert [row["unrelated_sentences"] for row in after] == [10, 18, 24, 36]
    assert all(len(row["kept_by_draw"]) == 3 and row["pairs"] == 5 for row in after)
    assert all(-1 < row["kept_mean"] < 2 for row in after)
    assert figures["mixed"]["with long"]["short_sentences_per_s"] > 0
