"""The shipped pretrained backbone (``hip_head/assets/mace_pretrained.model``).

It is written by ``scripts/pretrain_mace.py`` (see ``docs/pretrained.md``) and committed; a
missing file fails here with the command that regenerates it. The checks would fail for random
weights: energies and forces on a few test-split rows of the default dataset must be close to
the errors recorded in ``mace_pretrained.json`` and far better than predicting zero forces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mace")

import hip_head  # noqa: E402
from hip_head.assets import dataset_path  # noqa: E402

pytestmark = pytest.mark.mace

ASSETS = Path(hip_head.__file__).resolve().parent / "assets"
MODEL = ASSETS / "mace_pretrained.model"
META = ASSETS / "mace_pretrained.json"
DB = dataset_path("default_xtb.db")
REGENERATE = "run `.venv/bin/python scripts/pretrain_mace.py` (about 20 min on 2 CPU cores)"


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        pytest.fail(f"{path} is missing ({what}): {REGENERATE}")


@pytest.fixture(scope="module")
def meta() -> dict:
    _require(META, "the metrics of the shipped backbone")
    return json.loads(META.read_text())


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    _require(MODEL, "the shipped pretrained backbone")
    from hip_head.serialization import load_backbone

    return load_backbone(MODEL)  # the safe format: no trust needed


@pytest.fixture(scope="module")
def test_rows() -> list:
    """Three off-minimum test-split rows of the default dataset (different molecules, <= 12
    atoms), as ase.Atoms with the xTB Hessian in ``info["hessian"]``."""
    if not DB.is_file():
        pytest.fail(f"{DB} is missing: run `.venv/bin/python scripts/make_default_dataset.py`")
    import ase.db

    picked, seen = [], set()
    with ase.db.connect(str(DB), type="db", use_lock_file=False) as db:
        for row in db.select(split="test"):
            if row.molecule in seen or row.natoms > 12 or row.kind == "minimum":
                continue
            seen.add(row.molecule)
            atoms = row.toatoms()
            atoms.info["hessian"] = np.asarray(row.data["hessian"], np.float64).reshape(
                3 * row.natoms, 3 * row.natoms
            )
            picked.append(atoms)
            if len(picked) == 3:
                break
    assert len(picked) == 3, "the default dataset's test split has fewer than 3 molecules"
    return picked


def test_asset_is_a_small_float64_scaleshiftmace(backbone, meta):
    from mace.modules import ScaleShiftMACE

    assert isinstance(backbone, ScaleShiftMACE)
    assert next(backbone.parameters()).dtype == torch.float64
    assert [int(z) for z in backbone.atomic_numbers] == [1, 6, 7, 8]
    assert MODEL.stat().st_size < 5e6
    assert meta["model"]["num_parameters"] == sum(p.numel() for p in backbone.parameters())
    # the recorded metrics: test split evaluated, not trained on
    for split in ("train", "val", "test"):
        assert meta["metrics"][split]["num_frames"] > 0
    assert meta["test_autograd_hessian"]["hessian_mae"] > 0


def test_wrapped_asset_reproduces_recorded_accuracy(backbone, meta, test_rows):
    hip = hip_head.wrap(backbone)  # random head: only its shapes are checked
    assert hip.dtype == torch.float64
    outs = hip.predict(test_rows)
    de, df, fref = [], [], []
    for atoms, out in zip(test_rows, outs):
        n = len(atoms)
        assert out["forces"].shape == (n, 3)
        assert out["hessian"].shape == (3 * n, 3 * n)
        assert np.isfinite(out["hessian"]).all()
        de.append(abs(out["energy"] - atoms.get_potential_energy()) / n)
        df.append(np.abs(out["forces"] - atoms.get_forces()).ravel())
        fref.append(np.abs(atoms.get_forces()).ravel())
    e_mae = 1e3 * float(np.mean(de))  # meV/atom
    f_mae = 1e3 * float(np.mean(np.concatenate(df)))  # meV/Å
    f_zero = 1e3 * float(np.mean(np.concatenate(fref)))  # MAE of predicting zero forces
    rec = meta["metrics"]["test"]
    # generous bounds (3 rows vary), but far below what random weights give
    assert e_mae < max(3 * rec["energy_mae_mev_per_atom"], 10.0), (e_mae, rec)
    assert f_mae < max(3 * rec["forces_mae_mev_per_ang"], 50.0), (f_mae, rec)
    assert f_mae < 0.5 * f_zero, (f_mae, f_zero)


def test_autograd_hessian_of_asset_matches_recorded_baseline(backbone, meta, test_rows):
    atoms = min(test_rows, key=len)
    hip = hip_head.wrap(backbone, hessian="autograd")
    hessian = hip.predict(atoms)["hessian"]
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-8)
    mae = float(np.mean(np.abs(hessian - atoms.info["hessian"])))
    scale = float(np.mean(np.abs(atoms.info["hessian"])))
    recorded = meta["test_autograd_hessian"]["hessian_mae"]
    # random or scrambled weights give errors of the order of the Hessian itself
    assert mae < max(3 * recorded, 0.1 * scale), (mae, recorded, scale)
