"""benchmarks.bulk end to end on the tiny bundle: throughput beside the served load, and the kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import run_benchmark

pytestmark = pytest.mark.slow


def test_bulk_benchmark_resumes_after_the_kill(
    tiny_bundle: Path, tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "bulk.json"
    run_benchmark(
        *("benchmarks.bulk", "--bundle", str(tiny_bundle), "--texts", "3000"),
        *("--chunk-size", "100", "--rounds", "1", "--seconds", "0.5", "--out", str(out)),
    )
    figures = json.loads(out.read_text())
    assert figures["bulk_texts_per_s"] > 0
    assert figures["kill"]["rows"] == 3000
    assert figures["kill"]["same_as_uninterrupted"]
    assert figures["kill"]["saved_chunks_redone"] == 0
    assert not figures["kill"]["output_existed_after_kill"]
