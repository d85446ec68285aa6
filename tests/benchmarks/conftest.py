"""Running a benchmark module as a user would: `python -m benchmarks.X ...` from the root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(*args: str) -> None:
    """`python -m` with `args`; fails with the output's tail if it does not exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
