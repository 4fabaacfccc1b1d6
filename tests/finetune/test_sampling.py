"""Geometry sampling: RDKit conformers, xTB minima, normal-mode frames, Sella saddles, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

pytest.importorskip("tblite.ase")
pytest.importorskip("sella")
pytest.importorskip("rdkit")

import ase.io  # noqa: E402

from hip_head.cli import main as hip_main  # noqa: E402
from hip_head.finetune.data import read_extxyz  # noqa: E402
from hip_head.finetune.labels import label_xtb  # noqa: E402
from hip_head.finetune.sampling import (  # noqa: E402
    KINDS,
    conformers_from_smiles,
    find_saddle,
    normal_mode_samples,
    read_geometries,
    relax_xtb,
)
from hip_head.vibrations import vibrational_analysis  # noqa: E402

pytestmark = pytest.mark.chem


def _min_dist(atoms: Atoms) -> float:
    d = atoms.get_all_distances()
    return float(d[np.triu_indices(len(atoms), k=1)].min())


def _hessian(atoms: Atoms) -> np.ndarray:
    n3 = 3 * len(atoms)
    return label_xtb(atoms).hessian.reshape(n3, n3)


@pytest.fixture(scope="module")
def ethanol_min() -> tuple[Atoms, np.ndarray]:
    atoms = relax_xtb(conformers_from_smiles("CCO", seed=0)[0])
    return atoms, _hessian(atoms)


@pytest.fixture(scope="module")
def hcn_min() -> tuple[Atoms, np.ndarray]:
    atoms = relax_xtb(Atoms("HCN", positions=[[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]]))
    return atoms, _hessian(atoms)


# ---------------------------------------------------------------------------------- inputs
def test_conformer_from_smiles_is_sane_and_deterministic() -> None:
    (a,) = conformers_from_smiles("CCO", seed=3)
    (b,) = conformers_from_smiles("CCO", seed=3)
    assert len(a) == 9
    assert sorted(a.get_chemical_symbols()) == sorted("CCOHHHHHH")
    assert _min_dist(a) > 0.9
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.info["molecule"] == "CCO" and a.info["charge"] == 0 and a.info["spin"] == 1
    several = conformers_from_smiles("CCCC", n=3, seed=0)
    assert 1 <= len(several) <= 3


def test_conformer_bad_smiles_raises() -> None:
    with pytest.raises(ValueError, match="SMILES"):
        conformers_from_smiles("C(((")


def test_read_geometries(tmp_path) -> None:
    path = tmp_path / "two.xyz"
    ase.io.write(path, [molecule("H2O"), molecule("NH3")])
    frames = read_geometries([path])
    assert [len(f) for f in frames] == [3, 4]
    assert frames[0].info["molecule"] == "two:0" and frames[1].info["molecule"] == "two:1"


# ---------------------------------------------------------------------------------- minima
def test_relaxed_water_has_small_forces() -> None:
    from tblite.ase import TBLite

    start = molecule("H2O")
    start.positions[0] += [0.05, -0.03, 0.02]
    relaxed = relax_xtb(start, fmax=0.01)
    assert relaxed.info["converged"]
    relaxed.calc = TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0)
    assert np.linalg.norm(relaxed.get_forces(), axis=1).max() < 0.01


# ---------------------------------------------------------------------------------- thermal frames
def test_normal_mode_samples(ethanol_min) -> None:
    atoms, hessian = ethanol_min
    frames = normal_mode_samples(atoms, hessian, (100.0, 1000.0), n_per_temperature=8, seed=7)
    again = normal_mode_samples(atoms, hessian, (100.0, 1000.0), n_per_temperature=8, seed=7)
    assert len(frames) == 16
    for f, g in zip(frames, again):
        np.testing.assert_array_equal(f.positions, g.positions)
    other = normal_mode_samples(atoms, hessian, (100.0,), n_per_temperature=1, seed=8)
    assert not np.allclose(other[0].positions, frames[0].positions)

    def rms(f: Atoms) -> float:
        return float(np.sqrt(((f.positions - atoms.positions) ** 2).sum(axis=1).mean()))

    rms_cold = np.mean([rms(f) for f in frames[:8]])
    rms_hot = np.mean([rms(f) for f in frames[8:]])
    assert all(rms(f) > 1e-3 for f in frames)
    assert rms_hot > 2.0 * rms_cold  # amplitude ∝ sqrt(T): expected ratio sqrt(10) ≈ 3.2
    assert all(_min_dist(f) >= 0.7 for f in frames)
    assert {f.info["kind"] for f in frames} == {"off_equilibrium"}
    assert [f.info["temperature_K"] for f in frames] == [100.0] * 8 + [1000.0] * 8
    assert all(f.info["molecule"] == "CCO" for f in frames)
    # no rigid-body motion: the displacement is orthogonal to mass-weighted translations
    m = atoms.get_masses()
    for f in frames:
        com_shift = (m[:, None] * (f.positions - atoms.positions)).sum(0) / m.sum()
        np.testing.assert_allclose(com_shift, 0.0, atol=1e-10)


# ---------------------------------------------------------------------------------- saddles
def test_find_saddle_hcn_to_hnc(hcn_min) -> None:
    atoms, hessian = hcn_min
    assert vibrational_analysis(hessian, atoms).n_imaginary == 0
    saddle = find_saddle(atoms, hessian, displacement=0.3, fmax=0.01, steps=100)
    assert saddle is not None
    assert saddle.info["kind"] == "saddle"
    vib = vibrational_analysis(_hessian(saddle), saddle)
    assert vib.n_imaginary == 1
    assert -3000.0 < vib.frequencies_cm1[0] < -500.0  # checked fact: ~1424i cm⁻¹
    # the H bridges C and N at the transition state
    d = saddle.get_all_distances()
    assert d[0, 1] < 1.5 and d[0, 2] < 1.6


def test_find_saddle_returns_none_when_nothing_qualifies() -> None:
    water = relax_xtb(molecule("H2O"))
    # too few steps to reach any first-order saddle from water's bend
    assert find_saddle(water, displacement=0.1, steps=2, n_modes=1) is None


# ---------------------------------------------------------------------------------- CLI
def test_hip_data_sample_writes_labelable_extxyz(tmp_path) -> None:
    out = tmp_path / "frames.extxyz"
    argv = ["data", "sample", "--smiles", "C#N", "--out", str(out), "--temperatures", "300"]
    argv += ["1000", "--frames", "3", "--saddles", "1", "--seed", "0"]
    assert hip_main(argv) == 0
    frames = ase.io.read(out, index=":")
    kinds = [f.info["kind"] for f in frames]
    assert kinds == ["minimum"] + ["off_equilibrium"] * 6 + ["saddle"]
    assert set(kinds) <= set(KINDS)
    assert all(f.info["molecule"] == "C#N" for f in frames)
    assert len(read_extxyz(out)) == len(frames)  # readable by hip-head's readers
