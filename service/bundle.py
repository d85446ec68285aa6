"""Load and validate a model bundle folder (the contract in DESIGN.md); refuse a broken one clearly."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED_FILES = ("tokenizer", "encoder", "nli", "paraphrase")
# Optional: encoder.onnx also outputs `features` and this graph maps them to embeddings, so
# that the windows of a long text are pooled as the model pools one (the card's `windows`).
PROJECTION = "projection"
REQUIRED_KEYS = ("name", "version", "dim", "max_tokens", "files", "labels", "paraphrase_threshold")
NLI_LABELS = frozenset({"entailment", "neutral", "contradiction"})


class BundleError(Exception):
    """The bundle folder is missing, incomplete or inconsistent; the message says what and where."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A validated bundle: its folder, its card (model.json) and the paths of its files."""

    path: Path
    card: dict[str, Any]
    files: dict[str, Path]

    @property
    def name(self) -> str:
        """Model name from the card."""
        return str(self.card["name"])

    @property
    def version(self) -> str:
        """Model version from the card."""
        return str(self.card["version"])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.card["dim"])

    @property
    def max_tokens(self) -> int:
        """Longest input, in tokens, the encoder is given; longer inputs are truncated."""
        return int(self.card["max_tokens"])

    @property
    def sorts_by_length(self) -> bool:
        """Whether the encoder graph sorts a batch by length itself (`encoder_graph` in the
        card): then grouping inputs by length before batching gains nothing."""
        graph = self.card.get("encoder_graph")
        return isinstance(graph, dict) and graph.get("sorts_by_length") is True

    @property
    def pools_features(self) -> bool:
        """Whether a long text's windows are max-pooled over the encoder's `features`, then
        projected (a projection file and `windows.pooling: max` in the card); if not, its
        vector is the mean of its windows' vectors, weighted by the tokens each adds."""
        return PROJECTION in self.files and _windows_field(self.card, "pooling") == "max"

    @property
    def context_mark(self) -> int | None:
        """Where the encoder reads ids from this value up as context only (token id + mark),
        leaving them out of its pooling (the card's `windows.context_mark`), so that each
        window of a long text gives only the states it owns; None: windows give all of theirs."""
        mark = _windows_field(self.card, "context_mark")
        if not self.pools_features or mark is None:
            return None
        return int(mark)

    @property
    def nli_labels(self) -> list[str]:
        """NLI labels in logit order."""
        return list(self.card["labels"]["nli"])

    @property
    def paraphrase_labels(self) -> list[str]:
        """Paraphrase labels in logit order; the positive class is the second one."""
        return list(self.card["labels"]["paraphrase"])

    @property
    def paraphrase_threshold(self) -> float:
        """Probability of the positive class at or above which a pair is a paraphrase."""
        return float(self.card["paraphrase_threshold"])


def load_bundle(path: Path | str) -> Bundle:
    """Read `model.json` in `path`, check it against the bundle contract and return the bundle.

    Raises BundleError naming the first problem found (missing folder, file, key, bad value).
    """
    folder = Path(path)
    card = _read_card(folder)
    _check_card(card, folder)
    roles = [*REQUIRED_FILES, *([PROJECTION] if PROJECTION in card["files"] else [])]
    files = {role: folder / str(card["files"][role]) for role in roles}
    for role, file in files.items():
        if not file.is_file():
            raise BundleError(f"bundle {folder}: {role} file {file.name} is missing")
        if file.stat().st_size == 0:
            raise BundleError(f"bundle {folder}: {role} file {file.name} is empty")
    return Bundle(path=folder, card=card, files=files)


def _read_card(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise BundleError(f"bundle {folder}: no such folder (set --bundle or GENSEN_BUNDLE)")
    card_path = folder / "model.json"
    if not card_path.is_file():
        raise BundleError(f"bundle {folder}: model.json is missing")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle {folder}: model.json is not valid JSON ({exc})") from exc
    if not isinstance(card, dict):
        raise BundleError(f"bundle {folder}: model.json must hold a JSON object")
    return card


def _check_card(card: dict[str, Any], folder: Path) -> None:
    def fail(why: str) -> BundleError:
        return BundleError(f"bundle {folder}: model.json {why}")

    missing = [key for key in REQUIRED_KEYS if key not in card]
    if missing:
        raise fail(f"lacks {', '.join(missing)}")
    for key in ("dim", "max_tokens"):
        if not isinstance(card[key], int) or isinstance(card[key], bool) or card[key] < 1:
            raise fail(f"{key} must be a positive integer, not {card[key]!r}")
    files = card["files"]
    if not isinstance(files, dict) or any(
        not isinstance(files.get(r), str) for r in REQUIRED_FILES
    ):
        raise fail(f"files must name each of {', '.join(REQUIRED_FILES)}")
    if not isinstance(files.get(PROJECTION, ""), str):
        raise fail(f"files.{PROJECTION} must name a file")
    _check_labels(card["labels"], fail)
    _check_context_mark(card, fail)
    threshold = card["paraphrase_threshold"]
    if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise fail(f"paraphrase_threshold must be a probability, not {threshold!r}")


def _check_context_mark(card: dict[str, Any], fail: Callable[[str], BundleError]) -> None:
    """A context mark must lie past every token id, or a real token would be read as context."""
    mark = _windows_field(card, "context_mark")
    if mark is None:
        return
    vocab = card.get("vocab_size", 1)
    if not isinstance(mark, int) or isinstance(mark, bool) or mark < vocab or mark < 1:
        raise fail(f"windows.context_mark must be an integer of at least vocab_size, not {mark!r}")


def _windows_field(card: dict[str, Any], name: str) -> Any:
    """A field of the card's optional `windows` object (None where either is missing)."""
    windows = card.get("windows")
    return windows.get(name) if isinstance(windows, dict) else None


def _check_labels(labels: Any, fail: Callable[[str], BundleError]) -> None:
    if not isinstance(labels, dict):
        raise fail("labels must be an object with nli and paraphrase lists")
    nli = labels.get("nli")
    if not isinstance(nli, list) or len(nli) != 3 or set(nli) != NLI_LABELS:
        raise fail(f"labels.nli must list {', '.join(sorted(NLI_LABELS))} in logit order")
    para = labels.get("paraphrase")
    if not isinstance(para, list) or len(para) != 2 or not all(isinstance(x, str) for x in para):
        raise fail("labels.paraphrase must list two labels, the positive one second")
