"""Bundle loading: a good bundle loads; each kind of broken bundle is refused with a clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.bundle import BundleError, load_bundle


@pytest.fixture
def copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle that a test may break."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def edit_card(bundle: Path, **changes: object) -> None:
    card = json.loads((bundle / "model.json").read_text())
    card.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del card[key]
    (bundle / "model.json").write_text(json.dumps(card))


def test_loads_the_tiny_bundle(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.dim == 32
    assert bundle.max_tokens > 0
    assert bundle.nli_labels == ["entailment", "neutral", "contradiction"]
    assert len(bundle.paraphrase_labels) == 2
    assert 0 <= bundle.paraphrase_threshold <= 1
    assert all(path.is_file() for path in bundle.files.values())


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "absent")


def test_missing_card(copy: Path) -> None:
    (copy / "model.json").unlink()
    with pytest.raises(BundleError, match=r"model.json is missing"):
        load_bundle(copy)


def test_card_not_json(copy: Path) -> None:
    (copy / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(copy)


def test_missing_file(copy: Path) -> None:
    (copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder file encoder.onnx is missing"):
        load_bundle(copy)


def test_empty_file(copy: Path) -> None:
    (copy / "nli.onnx").write_bytes(b"")
    with pytest.raises(BundleError, match=r"nli file nli.onnx is empty"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": None}, "lacks dim"),
        ({"dim": 0}, "dim must be a positive integer"),
        ({"max_tokens": "64"}, "max_tokens must be a positive integer"),
        ({"files": {"encoder": "encoder.onnx"}}, "files must name each of"),
        ({"labels": {"nli": ["yes", "no", "maybe"], "paraphrase": ["n", "y"]}}, "labels.nli"),
        ({"labels": {"nli": ["entailment", "neutral", "contradiction"]}}, "labels.paraphrase"),
        ({"paraphrase_threshold": 2}, "paraphrase_threshold must be a probability"),
        ({"windows": {"pooling": "max", "context_mark": 5}}, "windows.context_mark must be"),
        ({"windows": {"pooling": "max", "context_mark": "x"}}, "windows.context_mark must be"),
    ],
)
def test_bad_card(copy: Path, changes: dict[str, object], message: str) -> None:
    edit_card(copy, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_context_mark_is_read_from_the_card_only_where_windows_pool_features(copy: Path) -> None:
    card = json.loads((copy / "model.json").read_text())
    assert load_bundle(copy).context_mark == card["vocab_size"]
    edit_card(copy, windows={"pooling": "mean", "context_mark": card["vocab_size"]})
    assert load_bundle(copy).context_mark is None
    edit_card(copy, windows={"pooling": "max"})
    assert load_bundle(copy).context_mark is None
