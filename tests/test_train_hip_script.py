"""``scripts/train_hip.py``: its stages name real data and make valid run configurations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hip_head.finetune.config import FinetuneConfig
from hip_head.finetune.data.sources import SHIPPED_DATASETS
from hip_head.finetune.losses import build_loss_terms

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def train_hip():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import train_hip

        yield train_hip
    finally:
        sys.path.remove(str(SCRIPTS))


def test_stages_train_on_shipped_sets_that_exist(train_hip) -> None:
    from hip_head.assets import dataset_path

    names = {name for stage in train_hip.HEAD_STAGES for name in stage.train}
    assert {"default", "extra", "reactions", "reactions_extra", "reactions_extra2"} <= names
    for name in names:
        assert dataset_path(SHIPPED_DATASETS[name]).is_file(), name


def test_head_config_is_a_valid_run(train_hip, tmp_path: Path) -> None:
    first, second, *rest = train_hip.HEAD_STAGES
    raw = train_hip.head_config(first, Path("backbone.model"), None, tmp_path / "run")
    config = FinetuneConfig.from_dict(raw)
    assert config.data.train == list(first.train)
    assert config.model.init is None and config.model.head == train_hip.HEAD
    assert config.data.kind_repeats == first.kind_repeats
    raw = train_hip.head_config(second, Path("backbone.model"), tmp_path / "a.pt", tmp_path / "b")
    config = FinetuneConfig.from_dict(raw)
    assert config.model.backbone is None and config.model.init == str(tmp_path / "a.pt")
    assert config.train.max_steps == second.steps
    for stage in rest:  # every later stage continues the previous one with registered terms
        raw = train_hip.head_config(stage, Path("b.model"), tmp_path / "a.pt", tmp_path / "c")
        config = FinetuneConfig.from_dict(raw)
        assert config.model.init == str(tmp_path / "a.pt")
        build_loss_terms(config.loss)  # unknown terms or bad options raise
    modes = train_hip.HEAD_STAGES[-1]
    assert "mode_sign" in modes.loss["terms"]


def test_backbone_description(train_hip, tmp_path: Path) -> None:
    model = tmp_path / "mace.model"
    assert "not retrained" in train_hip.backbone_description(model, "retrain")
    model.with_suffix(".json").write_text(json.dumps({"description": "trained on X"}))
    assert train_hip.backbone_description(model, "retrain").endswith("trained on X")
    assert "all train splits" in train_hip.backbone_description(None, "retrain")
    assert "mace_pretrained" in train_hip.backbone_description(None, "shipped")
