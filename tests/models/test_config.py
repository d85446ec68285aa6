"""Training configs: a config that names a base holds only what differs from it."""

from __future__ import annotations

import json
from pathlib import Path

from models.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "models" / "configs"


def test_a_config_overrides_the_top_level_keys_of_its_base(tmp_path: Path) -> None:
    base = TrainConfig.load(CONFIGS / "gensen-base.json")
    (tmp_path / "base.json").write_text((CONFIGS / "gensen-base.json").read_text())
    (tmp_path / "mid.json").write_text(json.dumps({"base": "base.json", "transfer_weight": 0.3}))
    (tmp_path / "top.json").write_text(json.dumps({"base": "mid.json", "seed": 7}))
    top = TrainConfig.load(tmp_path / "top.json")
    assert (top.seed, top.transfer_weight) == (7, 0.3)
    assert top.phases == base.phases
    assert top.encoder == base.encoder


def test_every_shipped_config_loads() -> None:
    loaded = {path.name: TrainConfig.load(path) for path in CONFIGS.glob("*.json")}
    assert loaded["gensen-base-3b.json"].transfer_weight == 1.0
    assert (
        loaded["gensen-base-3b.json"].transfer_teacher
        == loaded["gensen-base-3.json"].transfer_teacher
    )
    assert loaded["gensen-base-3.json"].phases == loaded["gensen-base.json"].phases
