"""benchmarks.serve end to end on the tiny bundle (a fraction of a second a measurement):
its figures are what the README quotes, so a benchmark that breaks fails a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import run_benchmark

pytestmark = pytest.mark.slow


def test_serve_benchmark_writes_its_figures(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    run_benchmark(
        *("benchmarks.serve", "--bundle", str(tiny_bundle), "--provider", "cpu"),
        *("--seconds", "1", "--rounds", "1", "--loads", "1x4,4x4", "--route", "/nli"),
        *("--workers", "2", "--out", str(out)),
    )
    figures = json.loads(out.read_text())
    assert figures["route"] == "/nli"
    assert set(figures["loads"]) == {"1x4", "4x4"}
    for load in figures["loads"].values():
        assert load["served_sentences_per_s"] > 0
        assert load["served_errors"] == 0
        assert load["main_cpu_ms_per_request"] > 0
        assert load["engine_cpu_ms_per_request"] > 0  # the engine process apart
        assert load["workers_cpu_ms_per_request"] > 0
        assert load["served_mean_batch_rows"] >= 1  # /nli: two rows a pair
        assert 0 < load["encoder_cpu_ms_per_request"] < load["engine_cpu_ms_per_request"]
    assert figures["raw_by_length_batch_64_sentences_per_s"] > 0
    assert figures["low_load_p50_ms"] > 0
