"""Reference labels: xTB finite-difference Hessians, PySCF analytic Hessians, batch labelling."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

pytest.importorskip("tblite.ase")
pytest.importorskip("pyscf")

from hip_head.autograd import finite_difference_hessian  # noqa: E402
from hip_head.finetune import labels  # noqa: E402
from hip_head.finetune.data import AseDbDataset  # noqa: E402
from hip_head.finetune.labels import (  # noqa: E402
    LabelError,
    label_key,
    label_many,
    label_pyscf,
    label_xtb,
    main_label,
)
from hip_head.vibrations import frequencies  # noqa: E402

pytestmark = pytest.mark.chem


def _xtb_forces(atoms: Atoms, positions: np.ndarray) -> np.ndarray:
    from tblite.ase import TBLite

    work = Atoms(numbers=atoms.numbers, positions=positions)
    work.calc = TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0)
    return work.get_forces()


@pytest.fixture(scope="module")
def relaxed_water() -> Atoms:
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    atoms = molecule("H2O")
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=200)
    return Atoms(numbers=atoms.numbers, positions=atoms.positions)


# ---------------------------------------------------------------------------------- xTB
def test_xtb_hessian_matches_directional_derivative_of_forces() -> None:
    atoms = molecule("H2O")
    atoms.positions[0] += [0.02, -0.01, 0.03]  # off-equilibrium
    sample = label_xtb(atoms)
    n3 = 3 * len(atoms)
    h = sample.hessian_matrix()
    assert sample.hessian.shape == (n3 * n3,)
    np.testing.assert_allclose(h, h.T, atol=1e-12)  # symmetrised
    np.testing.assert_allclose(sample.forces, _xtb_forces(atoms, atoms.positions), atol=1e-5)
    rng = np.random.default_rng(0)
    x0 = atoms.get_positions()
    for _ in range(3):
        v = rng.normal(size=(len(atoms), 3))
        v /= np.linalg.norm(v)
        step = 5e-4
        df = (_xtb_forces(atoms, x0 + step * v) - _xtb_forces(atoms, x0 - step * v)) / (2 * step)
        hv = h @ v.reshape(-1)
        # -dF/dv = H v; |H| ~ 50 eV/Å², FD/SCF noise ~ 1e-3 eV/Å² at accuracy 0.01
        np.testing.assert_allclose(hv, -df.reshape(-1), atol=5e-3 + 1e-3 * np.abs(hv).max())


def test_xtb_relaxed_water_frequencies(relaxed_water: Atoms) -> None:
    sample = label_xtb(relaxed_water)
    freqs = frequencies(sample.hessian_matrix(), relaxed_water)
    assert freqs.shape == (3,)
    assert np.all(freqs > 0), freqs
    assert 1300 < freqs.min() and freqs.max() < 4000, freqs


def test_xtb_impossible_multiplicity_raises_label_error() -> None:
    with pytest.raises(LabelError, match="tblite"):
        label_xtb(molecule("H2O"), spin=2)  # 10 electrons cannot be a doublet


# ---------------------------------------------------------------------------------- PySCF
def _pyscf_rhf(atoms: Atoms, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """RHF/STO-3G energy (eV) and forces (eV/Å), converted independently of labels.py."""
    from pyscf import gto, scf

    mol = gto.M(
        atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), positions)],
        unit="Angstrom",
        basis="sto-3g",
        verbose=0,
    )
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-11
    energy = mf.kernel()
    grad = mf.nuc_grad_method().kernel()
    return energy * units.Hartree, -grad * units.Hartree / units.Bohr


def test_pyscf_analytic_hessian_units_match_finite_differences() -> None:
    atoms = molecule("H2O")
    atoms.positions[1] += [0.0, 0.03, -0.02]
    sample = label_pyscf(atoms, method="RHF", basis="sto-3g")
    x0 = atoms.get_positions()
    energy, forces = _pyscf_rhf(atoms, x0)
    assert sample.energy == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(sample.forces, forces, atol=1e-4)  # SCF convergence noise
    assert sample.spin == 1 and sample.charge == 0

    # forces (eV/Å) against the energy (eV): -dE/dv = F·v
    v = np.random.default_rng(1).normal(size=x0.shape)
    v /= np.linalg.norm(v)
    h_step = 1e-3
    de = (_pyscf_rhf(atoms, x0 + h_step * v)[0] - _pyscf_rhf(atoms, x0 - h_step * v)[0]) / (
        2 * h_step
    )
    assert -de == pytest.approx(float(np.sum(forces * v)), rel=1e-4, abs=1e-5)

    # analytic Hessian (Hartree/Bohr² -> eV/Å²) against FD of the analytic forces (eV/Å)
    fd = finite_difference_hessian(lambda x: _pyscf_rhf(atoms, x)[1], x0, step=1e-3)
    h = sample.hessian_matrix()
    np.testing.assert_allclose(h, h.T, atol=1e-12)
    scale = np.abs(fd).max()
    assert np.abs(h - fd).max() < 1e-3 * scale, np.abs(h - fd).max() / scale


def test_pyscf_inconsistent_spin_raises_label_error() -> None:
    with pytest.raises(LabelError, match="rejected"):
        label_pyscf(molecule("H2O"), method="RHF", basis="sto-3g", spin=1)


def test_pyscf_unconverged_scf_raises_label_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyscf import scf

    monkeypatch.setattr(scf.hf.SCF, "max_cycle", 1)
    with pytest.raises(LabelError, match="not converged"):
        label_pyscf(molecule("H2O"), method="RHF", basis="sto-3g")


# ---------------------------------------------------------------------------------- batch
def _three_molecules() -> list[Atoms]:
    bad = molecule("H2O")
    bad.info["spin"] = 2  # a doublet with 10 electrons: tblite refuses
    return [molecule("H2O"), bad, molecule("NH3")]


def _rows(db_path) -> list:
    import ase.db

    return list(ase.db.connect(str(db_path)).select())


def test_label_many_records_failures_and_resumes(tmp_path) -> None:
    db = tmp_path / "labels.db"
    mols = _three_molecules()
    keys = [label_key(i, a) for i, a in enumerate(mols)]
    assert len(set(keys)) == 3 and keys == [label_key(i, a) for i, a in enumerate(mols)]

    report = label_many(mols, db, engine="xtb", workers=2)
    assert sorted(report.done) == sorted([keys[0], keys[2]])
    assert [k for k, _ in report.failed] == [keys[1]]
    assert "not compatible" in report.failed[0][1]
    rows = _rows(db)
    assert sorted(r.status for r in rows) == ["done", "done", "failed"]
    failed_row = next(r for r in rows if r.status == "failed")
    assert failed_row.label_key == keys[1] and "not compatible" in failed_row.reason
    assert all(r.level == "xtb:GFN2-xTB" for r in rows)

    # rerun: finished keys skipped, the failed key retried (fails again, its row replaced)
    again = label_many(mols, db, engine="xtb", workers=1)
    assert sorted(again.skipped) == sorted([keys[0], keys[2]])
    assert again.done == [] and [k for k, _ in again.failed] == [keys[1]]
    assert sorted(r.status for r in _rows(db)) == ["done", "done", "failed"]

    # retry_failed=False keeps the failed row and skips it
    kept = label_many(mols, db, engine="xtb", retry_failed=False)
    assert len(kept.skipped) == 3 and not kept.failed and not kept.done

    # the reader returns the successful rows only: failed rows are not records
    good = list(AseDbDataset(db))
    assert len(good) == 2
    assert all(s.meta.get("status") == "done" for s in good)
    for s in good:
        assert s.hessian is not None and s.hessian.size == (3 * s.num_atoms) ** 2
        assert s.energy is not None and s.forces.shape == (s.num_atoms, 3)
        assert s.meta["level"] == "xtb:GFN2-xTB"

    # another level of theory in the same database is refused
    with pytest.raises(ValueError, match="level"):
        label_many(mols, db, engine="xtb", method="GFN1-xTB")


def test_label_many_retry_replaces_failed_row(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "labels.db"
    mols = [molecule("H2O"), molecule("CH4"), molecule("NH3")]
    real = labels.ENGINES["xtb"]

    def flaky(atoms: Atoms, **kw):
        if atoms.get_chemical_formula() == "CH4":
            raise RuntimeError("simulated crash")
        return real(atoms, **kw)

    monkeypatch.setitem(labels.ENGINES, "xtb", flaky)
    first = label_many(mols, db, engine="xtb")
    assert len(first.done) == 2 and first.failed[0][1] == "RuntimeError: simulated crash"
    monkeypatch.setitem(labels.ENGINES, "xtb", real)
    second = label_many(mols, db, engine="xtb")
    assert len(second.skipped) == 2 and len(second.done) == 1 and not second.failed
    rows = _rows(db)
    assert len(rows) == 3 and all(r.status == "done" for r in rows)


def test_main_label_cli(tmp_path, capsys: pytest.CaptureFixture) -> None:
    import ase.io

    xyz = tmp_path / "in.extxyz"
    ase.io.write(str(xyz), [molecule("H2O"), molecule("CO2")], format="extxyz")
    db = tmp_path / "out.db"
    assert main_label([str(xyz), "--engine", "xtb", "--out", str(db)]) == 0
    assert "2 labelled" in capsys.readouterr().out
    assert main_label([str(xyz), "--out", str(db)]) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert len(AseDbDataset(db)) == 2


def test_hip_data_label_command_labels_and_resumes(tmp_path):
    from ase.build import molecule as build
    from ase.io import write

    from hip_head.cli import main

    xyz, db = tmp_path / "in.xyz", tmp_path / "out.db"
    write(xyz, [build("H2O"), build("NH3")])
    assert main(["data", "label", str(xyz), "--out", str(db)]) == 0
    assert len(AseDbDataset(db)) == 2
    assert main(["data", "label", str(xyz), "--out", str(db)]) == 0  # resumes: nothing new
    assert len(AseDbDataset(db)) == 2


def test_sampling_provenance_survives_labelling(tmp_path):
    from ase.build import molecule as build

    atoms = build("H2O")
    atoms.info.update(molecule="O", kind="off_equilibrium", temperature_K=300.0)
    label_many([atoms], tmp_path / "p.db", engine="xtb")
    (sample,) = list(AseDbDataset(tmp_path / "p.db"))
    assert sample.meta["molecule"] == "O" and sample.meta["kind"] == "off_equilibrium"
