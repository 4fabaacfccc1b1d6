"""The loss registry: named terms, one config type, new terms from YAML and the command line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hip_head.finetune.config import ConfigError, FinetuneConfig, LossConfig, load_config
from hip_head.finetune.losses import (
    LOSS_TERMS,
    LossBatch,
    LossTerm,
    LossWeights,
    build_loss_terms,
    register_loss,
    total_loss,
)


@register_loss("forces_rms_test")
class ForcesRMS(LossTerm):
    """Root-mean-square force error, eV/Å (a term only this test module registers)."""

    keys = ("forces",)

    def __init__(self, power: float = 1.0) -> None:
        self.power = power

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        diff = batch.pred["forces"] - batch.target["forces"]
        return diff.square().mean().sqrt() ** self.power


def _batch(seed: int = 0) -> tuple[dict, dict, list[int]]:
    gen = torch.Generator().manual_seed(seed)
    counts = [2, 3]
    n = sum(counts)
    flat = sum((3 * c) ** 2 for c in counts)

    def make() -> dict:
        return {
            "energy": torch.randn(2, generator=gen),
            "forces": torch.randn(n, 3, generator=gen),
            "hessian": torch.randn(flat, generator=gen),
        }

    return make(), make(), counts


def test_the_loss_config_is_the_one_weights_type():
    assert LossWeights is LossConfig
    assert {f.name for f in dataclasses.fields(LossConfig)} >= {
        "energy",
        "forces",
        "hessian",
        "subspace",
        "subspace_dist",
        "energy_kind",
        "forces_kind",
        "energy_per_atom",
        "terms",
    }
    assert {"energy", "forces", "hessian", "subspace", "hessian_rows"} <= set(LOSS_TERMS)


def test_every_loss_option_is_settable_from_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {backbone: default}\n"
        "loss: {subspace_dist: frosq, energy_kind: mse, forces_kind: mse, energy_per_atom: true,"
        " hessian_normalization: molecule, subspace_k: null}\n"
    )
    loss = load_config(path).loss
    assert (loss.subspace_dist, loss.energy_kind, loss.forces_kind) == ("frosq", "mse", "mse")
    assert loss.energy_per_atom and loss.hessian_normalization == "molecule"
    assert loss.subspace_k is None
    with pytest.raises(ConfigError, match="loss.subspace_dist"):
        FinetuneConfig.from_dict(
            {"model": {"backbone": "default"}, "loss": {"subspace_dist": "l3"}}
        )


def test_a_registered_term_is_used_by_a_yaml_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {backbone: default}\n"
        "train: {mode: full}\n"
        "loss: {hessian: 0.0, terms: {forces_rms_test: {weight: 2.0, power: 2.0}}}\n"
    )
    config = load_config(path)
    names = [name for name, _, _ in build_loss_terms(config.loss)]
    assert names == ["energy", "forces", "forces_rms_test"]
    pred, target, counts = _batch()
    total, parts = total_loss(pred, target, counts, config.loss)
    rms = (pred["forces"] - target["forces"]).square().mean().sqrt()
    assert torch.allclose(parts["forces_rms_test"], rms**2)
    expected = parts["energy"] * 1.0 + parts["forces"] * 25.0 + 2.0 * rms**2
    assert torch.allclose(total, expected)


def test_terms_are_settable_from_the_command_line():
    config = load_config(
        None,
        [
            "model.backbone=default",
            "loss.terms.forces_rms_test.weight=0.5",
            "loss.terms.forces_rms_test.power=3",
        ],
    )
    assert config.loss.terms == {"forces_rms_test": {"weight": 0.5, "power": 3}}
    (term,) = [t for name, _, t in build_loss_terms(config.loss) if name == "forces_rms_test"]
    assert term.power == 3


@pytest.mark.parametrize(
    ("terms", "match"),
    [
        ({"no_such_term": {"weight": 1.0}}, "unknown loss term 'no_such_term'"),
        ({"forces_rms_test": {"weight": -1.0}}, "must be a number >= 0"),
        ({"forces_rms_test": {"weight": 1.0, "colour": 2}}, "forces_rms_test.*colour"),
        ({"forces_rms_test": 1.0}, "mapping with a 'weight'"),
        ({"hessian": {"weight": 1.0}}, "set its weight as loss.hessian"),
    ],
)
def test_bad_terms_are_named_at_config_time(terms, match):
    with pytest.raises(ConfigError, match=match):
        FinetuneConfig.from_dict({"model": {"backbone": "default"}, "loss": {"terms": terms}})


def test_head_mode_may_train_on_a_registered_term_alone():
    config = FinetuneConfig.from_dict(
        {
            "model": {"backbone": "default"},
            "loss": {"hessian": 0.0, "terms": {"forces_rms_test": {"weight": 1.0}}},
        }
    )
    assert config.train.mode == "head"
    with pytest.raises(ConfigError, match="loss.terms"):
        FinetuneConfig.from_dict({"model": {"backbone": "default"}, "loss": {"hessian": 0.0}})


def test_registering_a_second_class_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_loss("hessian")
        class Other(LossTerm):
            pass

    with pytest.raises(ValueError, match="LossTerm subclass"):
        register_loss("not_a_term")(dict)  # type: ignore[arg-type]
