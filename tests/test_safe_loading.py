"""Opening model files never runs code unless the user trusts the file.

A crafted pickle whose ``__reduce__`` calls ``os.system("touch MARKER")`` stands for any
malicious model file: every loader must refuse it (no marker) with an error that says how to
open a trusted file, and run it only with ``trust``. Safe-format files (HIP and backbone) load
with ``torch.load(weights_only=True)`` and rebuild models that predict exactly as the originals.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

import hip_head
from hip_head import serialization
from hip_head.serialization import (
    NoSafeRecipeError,
    PickleFormatWarning,
    UntrustedFileError,
)

pytestmark = pytest.mark.mace
pytest.importorskip("mace")


class Malicious:
    """Runs a shell command when unpickled (creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code_ran"


@pytest.fixture(params=["bare", "hip_payload"])
def evil_file(request, tmp_path, marker) -> Path:
    """A malicious ``.model``: a bare pickle, or one dressed as a (legacy) HIP file."""
    payload = Malicious(marker)
    if request.param == "hip_payload":
        payload = {"format": serialization.LEGACY_FORMAT, "model": payload}
    path = tmp_path / "evil.model"
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def small_hip(tiny_mace):
    """A float64 HIP around a small random ScaleShiftMACE (head: 4 channels)."""
    torch.manual_seed(0)
    return hip_head.wrap(tiny_mace, channels=4)


def _outputs(model, atoms) -> dict[str, np.ndarray]:
    out = model.predict(atoms)
    return {k: np.asarray(v) for k, v in out.items()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float = 1e-12) -> None:
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


# ---------------------------------------------------------------------- refusing pickles
def test_load_refuses_a_malicious_pickle_and_runs_nothing(evil_file, marker):
    with pytest.raises(UntrustedFileError, match="pickled Python objects.*trust=True"):
        hip_head.load(evil_file)
    assert not marker.exists()
    assert issubclass(UntrustedFileError, hip_head.HIPError)


def test_trust_is_the_switch(evil_file, marker):
    with pytest.warns(PickleFormatWarning), pytest.raises(ValueError, match="not a hip-head"):
        hip_head.load(evil_file, trust=True)
    assert marker.exists()  # the file's code ran: only because trust=True was passed


def test_load_backbone_refuses_without_trust(evil_file, marker):
    from hip_head.finetune.config import ConfigError
    from hip_head.finetune.train import load_backbone

    with pytest.raises(ConfigError, match="--trust"):
        load_backbone(str(evil_file))
    with pytest.raises(UntrustedFileError):
        serialization.load_backbone(evil_file)
    assert not marker.exists()
    with pytest.warns(PickleFormatWarning), pytest.raises(ConfigError, match="not a model"):
        load_backbone(str(evil_file), trust=True)
    assert marker.exists()


def test_finetune_cli_refuses_backbone_and_init(tmp_path, marker, capsys):
    from hip_head.finetune.train import main_finetune

    evil = tmp_path / "evil.model"
    torch.save(Malicious(marker), evil)
    for flag in ("--backbone", "--init"):
        rc = main_finetune([flag, str(evil), "--out", str(tmp_path / "run"), "--max-steps", "1"])
        err = capsys.readouterr().err.strip()
        assert rc == 2
        assert len(err.splitlines()) == 1 and "--trust" in err and "pickled" in err, err
        assert not marker.exists()


def test_model_trust_setting_opens_init(tmp_path, marker):
    from hip_head.finetune.config import ConfigError, load_config
    from hip_head.finetune.train import build_model

    evil = tmp_path / "evil.model"
    torch.save(Malicious(marker), evil)
    config = load_config(None, [f"model.init={evil}"])
    with pytest.raises(ConfigError, match="model.init: .*pickled"):
        build_model(config)
    assert not marker.exists()
    trusted = load_config(None, [f"model.init={evil}", "model.trust=true"])
    with pytest.warns(PickleFormatWarning), pytest.raises(ConfigError):
        build_model(trusted)
    assert marker.exists()


def test_convert_refuses_without_trust(evil_file, marker, tmp_path, capsys):
    with pytest.raises(UntrustedFileError):
        serialization.convert(evil_file, tmp_path / "out.model")
    assert serialization.main_convert([str(evil_file), str(tmp_path / "out.model")]) == 2
    assert "--trust" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.model").exists()


def test_a_description_naming_code_outside_the_allow_list_is_refused(small_hip, tmp_path):
    path = tmp_path / "hip.model"
    small_hip.save(path)
    payload = torch.load(path, weights_only=True)
    description = json.loads(payload["description"])
    description["backbone"]["config"]["config"]["gate"] = {"$object": "os.system"}
    payload["description"] = json.dumps(description)
    torch.save(payload, path)
    with pytest.raises(NoSafeRecipeError, match="allow-list"):
        hip_head.load(path)


# ---------------------------------------------------------------------- safe round trips
def test_hip_round_trip_is_safe_and_exact(small_hip, tmp_path):
    path = tmp_path / "hip.model"
    small_hip.save(path)
    payload = torch.load(path, weights_only=True)  # opens without unpickling code
    assert payload["format"] == serialization.FORMAT
    description = json.loads(payload["description"])
    assert description["backbone"]["class"] == "mace.modules.models.ScaleShiftMACE"
    assert description["head"]["options"]["channels"] == 4
    loaded = hip_head.load(path)
    assert loaded.dtype == torch.float64 and not loaded.training
    atoms = molecule("CH3CH2OH")
    _assert_same(_outputs(small_hip, atoms), _outputs(loaded, atoms))
    autograd = hip_head.HIPModel(loaded.adapter, loaded.readout, hessian="autograd")
    reference = hip_head.HIPModel(small_hip.adapter, small_hip.readout, hessian="autograd")
    _assert_same(_outputs(reference, atoms), _outputs(autograd, atoms))


def test_backbone_round_trip_loads_without_trust(tmp_path):
    from hip_head.adapters.mace import make_random_mace
    from hip_head.finetune.train import load_backbone

    plain = make_random_mace(channels=8, max_ell=2, correlation=2, scale_shift=False, seed=1)
    plain.readouts.requires_grad_(False)  # frozen parameters stay frozen
    path = tmp_path / "backbone.model"
    serialization.save_backbone(plain, path)
    assert torch.load(path, weights_only=True)["format"] == serialization.BACKBONE_FORMAT
    loaded = load_backbone(str(path))
    assert type(loaded) is type(plain)
    frozen = {n for n, p in loaded.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in plain.named_parameters() if not p.requires_grad} != set()
    torch.manual_seed(0)
    a = hip_head.wrap(plain, channels=4)
    b = hip_head.HIPModel(type(a.adapter)(loaded), a.readout)
    atoms = molecule("H2O")
    _assert_same(_outputs(a, atoms), _outputs(b, atoms))


def test_loading_a_backbone_file_in_a_fresh_process_prints_nothing():
    """Rebuilding a MACE backbone imports mace, which prints a notice; none reaches stdout."""
    import subprocess
    import sys

    script = (
        "from hip_head.serialization import load_model\n"
        "from hip_head.assets import asset_path\n"
        "load_model(asset_path('hip_pretrained.model'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout == "", done.stdout


def test_convert_a_trusted_legacy_file(small_hip, tmp_path):
    legacy = tmp_path / "legacy.model"
    torch.save({"format": serialization.LEGACY_FORMAT, "model": small_hip}, legacy)
    with pytest.raises(UntrustedFileError):
        hip_head.load(legacy)
    with pytest.warns(PickleFormatWarning):
        assert serialization.convert(legacy, tmp_path / "safe.model", trust=True) == "model"
    safe = hip_head.load(tmp_path / "safe.model")
    atoms = molecule("H2O")
    _assert_same(_outputs(small_hip, atoms), _outputs(safe, atoms))

    raw = tmp_path / "mace.model"
    torch.save(small_hip.backbone, raw)  # how MACE distributes its models
    rc = serialization.main_convert([str(raw), str(tmp_path / "bb.model"), "--trust"])
    assert rc == 0
    assert type(serialization.load_backbone(tmp_path / "bb.model")) is type(small_hip.backbone)


def test_backbone_without_recipe_falls_back_to_pickle(tmp_path):
    from tests.toy_backbone import make_toy

    toy = hip_head.wrap(make_toy(), channels=4)
    assert not serialization.has_safe_recipe(toy.backbone)
    path = tmp_path / "toy.model"
    with pytest.warns(PickleFormatWarning, match="trust=True"):
        toy.save(path)
    with pytest.raises(UntrustedFileError):
        hip_head.load(path)
    with pytest.warns(PickleFormatWarning):
        loaded = hip_head.load(path, trust=True)
    atoms = molecule("H2O")
    _assert_same(_outputs(toy, atoms), _outputs(loaded, atoms), atol=0)
    with pytest.raises(NoSafeRecipeError):
        serialization.save_backbone(toy.backbone, tmp_path / "toy_backbone.model")


def test_rebuild_check_notices_a_changed_attribute(tiny_mace):
    from hip_head.recipes import find_recipe, module_differences

    description = serialization.describe_backbone(tiny_mace)
    rebuilt = serialization.build_backbone(
        json.loads(json.dumps(description)), tiny_mace.state_dict()
    )
    assert module_differences(tiny_mace, rebuilt) == []
    rebuilt.interactions[1].avg_num_neighbors += 1.0
    assert any("avg_num_neighbors" in d for d in module_differences(tiny_mace, rebuilt))
    assert find_recipe(torch.nn.Linear(2, 2)) is None


def test_shipped_models_are_safe():
    from hip_head.assets import asset_path

    for name, fmt in (
        ("hip_pretrained.model", serialization.FORMAT),
        ("mace_pretrained.model", serialization.BACKBONE_FORMAT),
    ):
        assert torch.load(asset_path(name), weights_only=True)["format"] == fmt


@pytest.mark.pyg
@pytest.mark.parametrize("kind", ["schnet", "visnet"])
def test_torch_geometric_round_trip(kind, tmp_path):
    models = pytest.importorskip("torch_geometric.nn.models")
    torch.manual_seed(0)
    if kind == "schnet":
        backbone = models.SchNet(hidden_channels=8, num_filters=8, num_interactions=2, cutoff=4.0)
    else:
        backbone = models.ViSNet(
            num_heads=2, num_layers=2, hidden_channels=8, num_rbf=8, cutoff=4.0
        )
    hip = hip_head.wrap(backbone.double().eval(), channels=4)
    path = tmp_path / f"{kind}.model"
    hip.save(path)
    assert torch.load(path, weights_only=True)["format"] == serialization.FORMAT
    atoms = molecule("CH3CH2OH")
    _assert_same(_outputs(hip, atoms), _outputs(hip_head.load(path), atoms))


def test_refusal_holds_under_mace_environment_override(evil_file, marker, monkeypatch):
    # mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on import: it turns plain torch.load(path)
    # into an unpickler; hip-head always passes weights_only explicitly, which it leaves alone
    import mace  # noqa: F401

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UntrustedFileError):
        hip_head.load(evil_file)
    assert not marker.exists()
