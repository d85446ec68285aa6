"""benchmarks.gpu end to end on the CPU (the GPU run uses the same code), on the tiny bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import run_benchmark

pytestmark = pytest.mark.slow


def test_gpu_benchmark_runs_on_the_cpu_as_well(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    run_benchmark(
        *("benchmarks.gpu", "--bundle", str(tiny_bundle), "--provider", "cpu"),
        *("--workers", "1,2", "--seconds", "0.5", "--load-processes", "1", "--clients", "4"),
        *("--out", str(out)),
    )
    figures = json.loads(out.read_text())
    assert figures["parity"]["max_abs_difference"] == 0.0
    assert set(figures["served_8_per_request"]) == {"1", "2"}
    assert all(r["errors"] == 0 for r in figures["served_8_per_request"].values())
    assert figures["low_load_1_sentence"]["p50_ms"] > 0
