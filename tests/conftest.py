"""Shared fixtures: a small but real model bundle, built by the models code at session start."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.data import data_root
from models.tiny import build_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a tiny real bundle (encoder.onnx, nli.onnx, paraphrase.onnx, tokenizer.json, model.json)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "gensen-tiny")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests that need it skip when it is absent."""
    root = data_root()
    if not (root / "sts" / "stsb").is_dir():
        pytest.skip(f"shared data not found at {root} (set GENSEN_DATA)")
    return root
