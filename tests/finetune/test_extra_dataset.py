"""The shipped extra fine-tuning set (data/extra_xtb.db): what its data card promises."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hip_head.assets import dataset_path
from hip_head.finetune.config import DataConfig
from hip_head.finetune.data import AseDbDataset, open_source
from hip_head.vibrations import vibrational_analysis

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def extra():
    return AseDbDataset(dataset_path("extra_xtb.db"))


@pytest.fixture(scope="module")
def default():
    return AseDbDataset(dataset_path("default_xtb.db"))


def test_size_elements_and_split(extra):
    assert dataset_path("extra_xtb.db").stat().st_size <= 40e6
    assert len(set(extra.column("molecule"))) >= 400
    assert set(extra.column("split")) == {"train"}
    assert set(extra.column("kind")) == {"minimum", "off_equilibrium"}
    natoms = extra.column("natoms")
    assert 3 <= min(natoms) and max(natoms) <= 24
    letters = set("".join(c for f in extra.column("formula") for c in f if c.isalpha()))
    assert letters <= set("HCNO"), letters


@pytest.mark.chem
def test_no_molecule_of_the_default_dataset(extra, default):
    """Canonical SMILES: the default test (and train) molecules stay unseen."""
    from rdkit import Chem

    script = sys.modules.get("make_default_dataset")
    if script is None:
        spec = importlib.util.spec_from_file_location(
            "make_default_dataset", SCRIPTS / "make_default_dataset.py"
        )
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
    known = {Chem.MolToSmiles(Chem.MolFromSmiles(s)) for _, s in script.MOLECULES}
    assert len(known) == len(set(default.column("molecule")))
    found = set(extra.column("molecule"))
    assert found.isdisjoint(known)
    # and the molecule key is the canonical SMILES of the stored atoms' molecule
    assert all(Chem.MolToSmiles(Chem.MolFromSmiles(s)) == s for s in found)


def test_records_are_consistent_and_minima_are_minima(extra):
    kinds = extra.column("kind")
    per_molecule = Counter(extra.column("molecule"))
    assert min(per_molecule.values()) >= 5
    rng = np.random.default_rng(0)
    minima = [i for i, k in enumerate(kinds) if k == "minimum"]
    picks = rng.choice(minima, size=10, replace=False).tolist()
    picks += rng.choice(len(extra), size=10, replace=False).tolist()
    for i in picks:
        sample = extra[i]
        h = sample.hessian_matrix()
        n3 = 3 * sample.num_atoms
        assert h.shape == (n3, n3) and np.allclose(h, h.T, atol=1e-5)
        assert np.isfinite(sample.energy) and np.isfinite(sample.forces).all()
        if kinds[i] == "minimum":
            assert np.abs(sample.forces).max() < 0.05
            vib = vibrational_analysis(h, sample.to_atoms())
            assert vib.n_imaginary == 0, (sample.meta["molecule"], vib.frequencies_cm1[:3])


def test_open_source_resolves_the_shipped_names():
    data = DataConfig()
    extra = open_source("extra", data)
    assert isinstance(extra, AseDbDataset) and len(extra) > 1000
    assert len(open_source("default", data)) != len(extra)


@pytest.mark.chem
def test_script_reproduces_the_shipped_rows(extra, tmp_path, monkeypatch):
    """Fixed seeds: rebuilding the first two molecules gives the shipped frames and labels."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import make_extra_dataset

    out = tmp_path / "extra.db"
    args = ["--molecules", "2", "--workers", "1", "--work", str(tmp_path / "w"), "--out", str(out)]
    assert make_extra_dataset.main(args) == 0
    rebuilt = AseDbDataset(out)
    assert len(rebuilt) == 20
    for i in (0, 5, 19):
        new, old = rebuilt[i], extra[i]
        assert new.meta["molecule"] == old.meta["molecule"]
        assert np.allclose(new.positions, old.positions, atol=1e-4)
        assert np.allclose(new.hessian_matrix(), old.hessian_matrix(), atol=1e-2)
