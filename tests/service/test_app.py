"""The app factory and lifespan: nothing at import, model loaded and warmed in the lifespan."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from service.app import build_app
from service.bundle import BundleError
from service.settings import Settings
from tests.service.conftest import REPO_ROOT

pytestmark = pytest.mark.anyio


def test_imports_neither_torch_nor_models_and_loads_nothing_at_import() -> None:
    code = (
        "import sys, service.app, service.__main__, service.server\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'models')\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_service_sources_never_import_torch_or_models() -> None:
    forbidden = re.compile(r"^\s*(import|from)\s+(torch|models)\b", re.MULTILINE)
    for path in (REPO_ROOT / "service").rglob("*.py"):
        assert not forbidden.search(path.read_text()), path


def test_build_app_does_not_load_the_model(tmp_path: Path) -> None:
    app = build_app(Settings(bundle=tmp_path / "absent"))  # loading would fail
    assert not hasattr(app.state, "runtime")


async def test_lifespan_warms_up_before_ready(settings: Callable[..., Settings]) -> None:
    app = build_app(settings())
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        assert runtime.ready
        assert runtime.batcher.alive
        assert runtime.metrics.inputs._value.get() == 0  # warm-up ran on the engine, not a request
    assert not runtime.ready
    assert not runtime.batcher.alive


async def test_lifespan_refuses_a_broken_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (broken / "paraphrase.onnx").write_bytes(b"\x00" * 64)
    app = build_app(Settings(bundle=broken, provider="cpu"))
    with pytest.raises(BundleError, match="paraphrase"):
        async with app.router.lifespan_context(app):
            pass
