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


def _module_imports(package: str) -> dict[str, set[str]]:
    """Each module of `package` and the modules of `package` it imports, at any depth of its
    code (imports inside functions count: they still tie the two modules together)."""
    modules = {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((ROOT / package / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == package:
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{package}."):
                found.add(node.module.split(".")[1])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                found |= {
                    a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}.")
                }
        graph[name] = found & modules
    return graph


def test_no_two_modules_of_models_import_each_other():
    graph = _module_imports("models")

    def reachable(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
        return seen

    circles = sorted(name for name in graph if name in reachable(name))
    assert not circles, f"modules of models/ in an import circle: {circles}"
