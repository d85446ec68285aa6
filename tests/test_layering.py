"""Dependencies point inward: service/ never imports torch or models/; models/ never imports service/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"), [("service", {"torch", "models", "onnx"}), ("models", {"service"})]
)
def test_package_does_not_import(package: str, forbidden: set[str]):
    if not (ROOT / package).is_dir():
        pytest.skip(f"{package}/ not present")
    offenders = sorted((f, m) for f, m in _imports(package) if m in forbidden)
    assert not offenders
