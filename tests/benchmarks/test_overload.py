"""benchmarks.overload end to end on the tiny bundle: a fresh service a run, answers counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import run_benchmark

pytestmark = pytest.mark.slow


def test_overload_benchmark_counts_answers_and_connection_errors(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "overload.json"
    run_benchmark(
        *("benchmarks.overload", "--bundle", str(tiny_bundle), "--runs", "1", "--seconds", "2"),
        *("--clients", "32", "--per-request", "16", "--out", str(out)),
        *("--", "--queue-capacity", "64", "--max-inputs", "16"),
    )
    figures = json.loads(out.read_text())
    (run,) = figures["runs"]
    assert run.get("200", 0) > 0
    assert set(figures["statuses"]) <= {"200", "429", "503"}
    assert figures["runs_with_a_connection_error"] == 0
