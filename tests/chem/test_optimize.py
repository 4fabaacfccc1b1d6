"""Geometry optimisation (hip_head.chem.optimize) and the potential seam."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule

pytest.importorskip("sella")

from hip_head.chem._common import ChemistryError  # noqa: E402
from hip_head.chem.optimize import OPT_METHODS, optimize  # noqa: E402
from hip_head.chem.potentials import MeteredPotential, XTBPotential, as_potential  # noqa: E402
from hip_head.chem.search_commands import main_opt  # noqa: E402

pytestmark = pytest.mark.chem


def _distorted(name: str, seed: int = 0, sigma: float = 0.1):
    atoms = molecule(name)
    atoms.positions += np.random.default_rng(seed).normal(scale=sigma, size=atoms.positions.shape)
    return atoms


@pytest.fixture(scope="module")
def xtb():
    pytest.importorskip("tblite")
    return XTBPotential()


@pytest.mark.parametrize("method", OPT_METHODS)
def test_every_method_relaxes_water_with_xtb(method, xtb):
    result = optimize(_distorted("H2O"), xtb, method=method, fmax=0.01)
    assert result.converged, result.reason
    assert result.fmax < 0.01
    assert result.saddle_index == 0
    assert result.steps > 0 and result.model_calls > result.steps // 2
    assert result.path_positions.shape == (len(result.path_energies), 3, 3)
    assert result.path_energies[-1] < result.path_energies[0]
    assert result.atoms.calc is None and result.atoms.info["energy"] == result.energy_eV
    json.dumps(result.summary())


def test_newton_uses_the_hessian_every_k_steps(xtb):
    every = optimize(_distorted("H2O", 1), xtb, method="newton")
    sparse = optimize(_distorted("H2O", 1), xtb, method="newton", hessian_every=3)
    # +1: the saddle-index check at the end
    assert every.hessian_calls >= every.steps + 1
    assert sparse.hessian_calls < every.hessian_calls or sparse.steps > every.steps
    assert sparse.converged


def test_step_limit_is_a_result_not_an_error(xtb):
    result = optimize(_distorted("H2O", 2, 0.2), xtb, method="bfgs", max_steps=1)
    assert not result.converged and result.steps == 1
    assert "step limit" in result.reason


def test_bad_arguments(xtb):
    with pytest.raises(ChemistryError, match="unknown optimisation method"):
        optimize(molecule("H2O"), xtb, method="lbfgs-ish")
    with pytest.raises(ChemistryError, match="hessian_every"):
        optimize(molecule("H2O"), xtb, hessian_every=0)
    with pytest.raises(ChemistryError, match="cannot use a dict"):
        as_potential({})


def test_metered_potential_checks_hessian_shape():
    from ase.calculators.emt import EMT

    bad = MeteredPotential((EMT(), lambda atoms: np.zeros((2, 2))))
    with pytest.raises(ChemistryError, match="expected"):
        bad.hessian(molecule("H2O"))
    assert bad.meter.hessian_calls == 1


def test_cli_opt_bad_input(tmp_path, capsys):
    assert main_opt([str(tmp_path / "none.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hip opt: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.mace
@pytest.mark.slow
def test_newton_beats_bfgs_with_pretrained(tmp_path, capsys):
    """Newton (Sella order 0 with the HIP Hessian) needs fewer steps than BFGS on a distorted
    ethanol; both converge on water and ethanol."""
    pytest.importorskip("mace")
    from hip_head.chem._common import load_model

    model = load_model("pretrained")
    counts = {}
    for name in ("H2O", "CH3CH2OH"):
        for method in ("newton", "bfgs"):
            result = optimize(_distorted(name), model, method=method, fmax=0.01)
            assert result.converged, (name, method, result.reason)
            assert result.fmax < 0.01
            counts[name, method] = result.steps
    with capsys.disabled():
        print(f"\nsteps to fmax 0.01 eV/Å: {counts}")
    assert counts["CH3CH2OH", "newton"] < counts["CH3CH2OH", "bfgs"]

    start = tmp_path / "water.xyz"
    from ase.io import write

    write(start, _distorted("H2O"), format="extxyz")
    out = tmp_path / "relaxed.xyz"
    rc = main_opt([str(start), "--out", str(out), "--json", str(tmp_path / "opt.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert out.is_file() and "converged" in captured.out
    assert json.loads((tmp_path / "opt.json").read_text())["saddle_index"] == 0
