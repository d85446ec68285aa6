"""Container smoke test: docker/smoke-test.sh builds the CPU image with podman, runs it as
Kubernetes would, checks /ready, POST /embed and /metrics, then SIGTERM and a clean exit.

Skipped, with the reason, where podman, runc or root are missing (`.ci/run` installs them).
Without models/gensen-base in the repository it builds and serves the tests' tiny bundle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import find_tool

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "smoke-test.sh"
SKIPPED = 77  # the script's status for a missing prerequisite
TIMEOUT_S = 1200  # a cold run (debootstrap, wheels, build) takes a few minutes


def prerequisites() -> str | None:
    """Why the smoke test cannot run here, or None."""
    if sys.platform != "linux":
        return "podman containers need Linux"
    if os.geteuid() != 0:
        return "needs root (debootstrap, rootful podman)"
    missing = [t for t in ("podman", "runc", "debootstrap") if find_tool(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)"
    return None


@pytest.mark.slow
def test_image_builds_serves_and_drains(request: pytest.FixtureRequest) -> None:
    reason = prerequisites()
    if reason:
        pytest.skip(f"container smoke test: {reason}")
    env = {**os.environ, "PYTHON": sys.executable}
    if not (REPO / "models" / "gensen-base" / "model.json").exists():
        env["SMOKE_BUNDLE"] = str(request.getfixturevalue("tiny_bundle"))
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    report = result.stdout + result.stderr
    if result.returncode == SKIPPED:
        pytest.skip(report.strip().splitlines()[-1])
    print(report)  # phase timings, shown with -s or on failure
    assert result.returncode == 0, report
    assert "smoke: PASS" in report
