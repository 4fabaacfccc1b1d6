"""The shipped default dataset (data/default_xtb.db): what the data card promises."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hip_head.assets import dataset_path
from hip_head.finetune.data import AseDbDataset
from hip_head.vibrations import vibrational_analysis


@pytest.fixture(scope="module")
def dataset():
    return AseDbDataset(dataset_path("default_xtb.db"))


def test_size_counts_and_elements(dataset):
    path = dataset_path("default_xtb.db")
    assert path.stat().st_size <= 25e6
    assert 2500 <= len(dataset) <= 5000
    natoms = dataset.column("natoms")
    assert max(natoms) <= 25 and min(natoms) >= 3
    symbols = set("".join(c for c in f if c.isalpha()) for f in dataset.column("formula"))
    letters = set("".join(symbols))
    assert letters <= set("HCNO"), letters
    kinds = Counter(dataset.column("kind"))
    assert set(kinds) == {"minimum", "off_equilibrium", "saddle", "near_saddle"}
    assert kinds["saddle"] >= 40 and kinds["near_saddle"] >= 500
    assert len(set(dataset.column("molecule"))) >= 60


def test_splits_are_by_molecule(dataset):
    splits, molecules = dataset.column("split"), dataset.column("molecule")
    counts = Counter(splits)
    assert set(counts) == {"train", "val", "test"}
    assert 0.7 < counts["train"] / len(dataset) < 0.9
    assert counts["val"] > 100 and counts["test"] > 100
    owner: dict[str, set[str]] = {}
    for split, mol in zip(splits, molecules, strict=True):
        owner.setdefault(mol, set()).add(split)
    assert all(len(v) == 1 for v in owner.values())  # no molecule in two splits


def test_records_are_consistent_and_saddles_have_one_imaginary_mode(dataset):
    kinds = dataset.column("kind")
    rng = np.random.default_rng(0)
    saddles = [i for i, k in enumerate(kinds) if k == "saddle"]
    minima = [i for i, k in enumerate(kinds) if k == "minimum"]
    others = rng.choice(len(dataset), size=20, replace=False).tolist()
    for i in saddles[:10] + minima[:5] + others:
        sample = dataset[i]
        n3 = 3 * sample.num_atoms
        h = sample.hessian_matrix()
        assert h.shape == (n3, n3) and np.allclose(h, h.T, atol=1e-5)
        assert np.isfinite(sample.energy) and sample.forces.shape == (sample.num_atoms, 3)
        assert sample.meta["level"] if "level" in sample.meta else sample.meta["method"]
        vib = vibrational_analysis(h, sample.to_atoms())
        if kinds[i] == "saddle":
            assert vib.n_imaginary == 1, (sample.meta["molecule"], vib.frequencies_cm1[:3])
            assert np.abs(sample.forces).max() < 0.1
        if kinds[i] == "minimum":
            assert vib.n_imaginary == 0, (sample.meta["molecule"], vib.frequencies_cm1[:3])
