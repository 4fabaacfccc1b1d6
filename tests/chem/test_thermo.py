"""Ideal-gas thermochemistry, barriers and Eyring rates (hip_head.chem.thermo).

Most tests use synthetic Hessians built in the Eckart vibrational basis, so the frequencies
are known exactly and the expected values come from ASE's IdealGasThermo called directly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.io import write
from ase.thermochemistry import IdealGasThermo

from hip_head.chem import analysis_commands
from hip_head.chem._common import ChemistryError
from hip_head.chem.analysis_commands import main_rate
from hip_head.chem.thermo import (
    EV_PER_KCAL_MOL,
    ThermoResult,
    eyring_rate,
    free_energy_barrier,
    rate,
    thermo,
)
from hip_head.vibrations import eckart_projector

T = 298.15
P = 101325.0


def hessian_with_eigenvalues(atoms: Atoms, lam: np.ndarray) -> np.ndarray:
    """(3N, 3N) Hessian, eV/Å², whose Eckart mass-weighted eigenvalues are exactly ``lam``
    (eV/Å²/amu, ascending, one per vibrational mode) and whose rigid-body modes are zero."""
    proj = eckart_projector(atoms.get_positions(), atoms.get_masses())
    w, q = np.linalg.eigh(proj)
    basis = q[:, w > 0.5]
    assert basis.shape[1] == len(lam)
    sqrt_m = np.sqrt(np.repeat(atoms.get_masses(), 3))
    return sqrt_m[:, None] * sqrt_m[None, :] * ((basis * np.asarray(lam)) @ basis.T)


def hbar_omega(lam: np.ndarray) -> np.ndarray:
    """ħω in eV of mass-weighted eigenvalues λ ≥ 0 in eV/Å²/amu (SI conversion by hand)."""
    omega = np.sqrt(np.asarray(lam) * units._e / (1e-20 * units._amu))  # rad/s
    return units._hbar * omega / units._e


def cm1(lam: float) -> float:
    """Signed wavenumber, cm⁻¹, of one eigenvalue (imaginary as negative)."""
    return math.copysign(float(hbar_omega(abs(lam))) / units.invcm, lam)


#: H2O's three mass-weighted eigenvalues, eV/Å²/amu (about 1600, 3700 and 3800 cm⁻¹).
WATER_LAM = np.array([9.0, 48.0, 51.0])


def ase_reference(atoms, energies, geometry, sigma, spin, energy=0.0):
    return IdealGasThermo(
        vib_energies=list(energies),
        geometry=geometry,
        potentialenergy=energy,
        atoms=atoms,
        symmetrynumber=sigma,
        spin=spin,
        vib_selection="all",
    )


# ----------------------------------------------------------------------------- thermo
def test_thermo_equals_ase_ideal_gas_on_the_same_vibrations():
    water = molecule("H2O")
    h = hessian_with_eigenvalues(water, WATER_LAM)
    result = thermo(water, hessian=h, energy=-14.2, symmetry_number=2, temperature_K=350.0)
    ref = ase_reference(water, hbar_omega(WATER_LAM), "nonlinear", 2, 0.0, energy=-14.2)
    assert result.geometry == "nonlinear"
    assert result.spin == 0.0
    assert result.energy_eV == -14.2
    assert result.zpe_eV == pytest.approx(ref.get_ZPE_correction(), rel=1e-10)
    assert result.zpe_eV == pytest.approx(0.5 * hbar_omega(WATER_LAM).sum(), rel=1e-10)
    assert result.enthalpy_eV == pytest.approx(ref.get_enthalpy(350.0, verbose=False), rel=1e-10)
    s_ref = ref.get_entropy(350.0, P, verbose=False)
    assert result.entropy_eV_per_K == pytest.approx(s_ref, rel=1e-10)
    assert result.gibbs_eV == pytest.approx(ref.get_gibbs_energy(350.0, P, verbose=False))
    assert result.frequencies_cm1 == pytest.approx([cm1(x) for x in WATER_LAM], rel=1e-9)
    assert result.imaginary_cm1 == ()
    assert result.saddle_index == 0


def test_pressure_enters_the_translational_entropy():
    water = molecule("H2O")
    h = hessian_with_eigenvalues(water, WATER_LAM)
    low = thermo(water, hessian=h, energy=0.0, pressure_Pa=P / 10)
    high = thermo(water, hessian=h, energy=0.0, pressure_Pa=P)
    # S(p) = S(p0) - k_B ln(p / p0)
    assert low.entropy_eV_per_K - high.entropy_eV_per_K == pytest.approx(units.kB * np.log(10))
    assert low.enthalpy_eV == pytest.approx(high.enthalpy_eV)


def test_linear_molecule_uses_linear_rotor_and_3n_minus_5_modes():
    co2 = molecule("CO2")
    lam = np.array([2.0, 2.0, 50.0, 140.0])  # two bends, symmetric and asymmetric stretch
    result = thermo(co2, hessian=hessian_with_eigenvalues(co2, lam), energy=0.0, symmetry_number=2)
    ref = ase_reference(co2, hbar_omega(lam), "linear", 2, 0.0)
    assert result.geometry == "linear"
    assert len(result.frequencies_cm1) == 4
    assert result.entropy_eV_per_K == pytest.approx(ref.get_entropy(T, P, verbose=False))
    assert result.enthalpy_eV == pytest.approx(ref.get_enthalpy(T, verbose=False))


def test_monatomic_argon_standard_entropy():
    result = thermo(Atoms("Ar"), hessian=np.zeros((3, 3)), energy=-1.0)
    assert result.geometry == "monatomic"
    assert result.frequencies_cm1 == ()
    # Sackur-Tetrode: S°(Ar, 298.15 K, 1 atm) = 154.74 J/(mol K) (154.85 at 1 bar)
    s_j_per_mol_k = result.entropy_eV_per_K * units._e * units._Nav
    assert s_j_per_mol_k == pytest.approx(154.74, abs=0.05)
    assert result.enthalpy_eV == pytest.approx(-1.0 + 2.5 * units.kB * T)


def test_minimum_needs_no_imaginary_mode_and_message_names_it():
    water = molecule("H2O")
    lam = np.array([-4.0, 48.0, 51.0])
    with pytest.raises(ChemistryError) as err:
        thermo(water, hessian=hessian_with_eigenvalues(water, lam), energy=0.0)
    message = str(err.value)
    assert f"{cm1(-4.0):.1f} cm^-1" in message
    assert "saddle index 1" in message and "allow_saddle=True" in message


def test_transition_state_drops_its_imaginary_mode():
    water = molecule("H2O")
    lam = np.array([-4.0, 48.0, 51.0])
    result = thermo(
        water, hessian=hessian_with_eigenvalues(water, lam), energy=0.0, allow_saddle=True
    )
    ref = ase_reference(water, hbar_omega(lam[1:]), "nonlinear", 1, 0.0)
    assert result.imaginary_cm1 == pytest.approx([cm1(-4.0)])
    assert len(result.vib_energies_eV) == 2
    assert result.zpe_eV == pytest.approx(0.5 * hbar_omega(lam[1:]).sum())
    assert result.gibbs_eV == pytest.approx(ref.get_gibbs_energy(T, P, verbose=False))


def test_second_order_saddle_refused_even_with_allow_saddle():
    water = molecule("H2O")
    lam = np.array([-4.0, -2.0, 51.0])
    with pytest.raises(ChemistryError, match="saddle index 2") as err:
        thermo(water, hessian=hessian_with_eigenvalues(water, lam), energy=0.0, allow_saddle=True)
    assert f"{cm1(-4.0):.1f}, {cm1(-2.0):.1f} cm^-1" in str(err.value)


def test_noise_level_negative_frequency_is_not_imaginary_and_is_left_out():
    water = molecule("H2O")
    lam = np.array([-1e-5, 48.0, 51.0])  # about -0.3 cm^-1, above the -10 cm^-1 threshold
    result = thermo(water, hessian=hessian_with_eigenvalues(water, lam), energy=0.0)
    assert result.imaginary_cm1 == ()
    assert result.vib_energies_eV == pytest.approx(hbar_omega(lam[1:]))


def test_symmetry_number_lowers_entropy_by_kb_ln_sigma():
    ch4 = molecule("CH4")
    h = hessian_with_eigenvalues(ch4, np.linspace(20.0, 60.0, 9))
    default = thermo(ch4, hessian=h, energy=0.0)
    td = thermo(ch4, hessian=h, energy=0.0, symmetry_number=12)
    assert default.symmetry_number == 1
    assert default.entropy_eV_per_K - td.entropy_eV_per_K == pytest.approx(units.kB * np.log(12))
    with pytest.raises(ChemistryError, match="symmetry_number"):
        thermo(ch4, hessian=h, energy=0.0, symmetry_number=0)


def _ch3():
    ch3 = Atoms(
        "CH3",
        positions=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.935, 0], [-0.54, -0.935, 0]],
    )
    return ch3, hessian_with_eigenvalues(ch3, np.linspace(10.0, 60.0, 6))


def test_spin_defaults_from_electron_count_charge_and_magnetic_moments():
    ch3, h = _ch3()
    radical = thermo(ch3, hessian=h, energy=0.0)  # 9 electrons: doublet
    assert radical.spin == 0.5
    explicit = thermo(ch3, hessian=h, energy=0.0, spin=0.5)
    assert explicit.entropy_eV_per_K == pytest.approx(radical.entropy_eV_per_K)
    cation = ch3.copy()
    cation.info["charge"] = 1  # 8 electrons: singlet
    singlet = thermo(cation, hessian=h, energy=0.0)
    assert singlet.spin == 0.0
    # electronic entropy k_B ln(2S + 1)
    assert radical.entropy_eV_per_K - singlet.entropy_eV_per_K == pytest.approx(
        units.kB * np.log(2)
    )
    o2 = molecule("O2")  # ASE's G2 O2 carries initial magnetic moments [1, 1]: a triplet
    h_o2 = hessian_with_eigenvalues(o2, np.array([70.0]))
    assert thermo(o2, hessian=h_o2, energy=0.0).spin == 1.0
    o2.set_initial_magnetic_moments([0.0, 0.0])  # 16 electrons, no moments: singlet
    assert thermo(o2, hessian=h_o2, energy=0.0).spin == 0.0
    o2.info["spin"] = 3  # multiplicity, as in hip_head.finetune.labels
    assert thermo(o2, hessian=h_o2, energy=0.0).spin == 1.0


def test_spin_inconsistent_with_electron_count_is_refused():
    water = molecule("H2O")
    h = hessian_with_eigenvalues(water, WATER_LAM)
    with pytest.raises(ChemistryError, match="parity"):
        thermo(water, hessian=h, energy=0.0, spin=0.5)
    with pytest.raises(ChemistryError, match="multiple of 1/2"):
        thermo(water, hessian=h, energy=0.0, spin=0.3)


def test_needs_exactly_one_of_model_and_hessian():
    water = molecule("H2O")
    h = hessian_with_eigenvalues(water, WATER_LAM)
    with pytest.raises(ChemistryError, match="model="):
        thermo(water)
    with pytest.raises(ChemistryError, match="energy="):
        thermo(water, hessian=h)
    with pytest.raises(ChemistryError, match="does not fit"):
        thermo(water, hessian=np.zeros((6, 6)), energy=0.0)
    with pytest.raises(ChemistryError, match="temperature"):
        thermo(water, hessian=h, energy=0.0, temperature_K=0.0)


# ----------------------------------------------------------------------------- Eyring
def test_eyring_rate_hand_computed():
    # k_B T / h at 298.15 K = 1.380649e-23 * 298.15 / 6.62607015e-34 = 6.2124e12 s^-1;
    # ΔG‡ / k_B T = 0.8 / 0.0256926 = 31.137; k = 6.2124e12 * exp(-31.137) = 0.18641 s^-1.
    assert eyring_rate(0.8, 298.15) == pytest.approx(0.18641, rel=1e-4)
    assert eyring_rate(0.0, 298.15) == pytest.approx(6.2124e12, rel=1e-4)
    assert eyring_rate(0.8, 298.15, transmission=0.5) == pytest.approx(0.5 * 0.18641, rel=1e-4)
    # CODATA 2018 (scipy) vs ASE's CODATA 2014: k_B differs by 4e-7, 31-fold in the exponent
    constants = pytest.importorskip("scipy.constants")
    kt = constants.k * 298.15
    exact = kt / constants.h * math.exp(-0.8 * constants.e / kt)
    assert eyring_rate(0.8, 298.15) == pytest.approx(exact, rel=3e-5)


def test_eyring_rate_rejects_bad_arguments():
    for bad in ({"temperature_K": 0.0}, {"temperature_K": -5.0}, {"transmission": 0.0}):
        with pytest.raises(ChemistryError):
            eyring_rate(0.8, **{"temperature_K": 300.0, **bad})


# ----------------------------------------------------------------------------- barriers
class TableModel:
    """Stands in for a HIPModel: ``predict`` returns the stored output of matching positions."""

    def __init__(self, entries):
        self.entries = entries  # [(atoms, energy eV, hessian)]

    def predict(self, atoms):
        for ref, energy, hessian in self.entries:
            if np.allclose(ref.positions, atoms.positions):
                return {"energy": energy, "forces": np.zeros((len(atoms), 3)), "hessian": hessian}
        raise KeyError("unknown structure")


TS_LAM = np.array([-6.0, 30.0, 45.0])


@pytest.fixture
def reaction():
    """A water 'reactant' minimum (E = -10 eV) and a bent 'TS' (E = -9.5 eV, one imaginary)."""
    reactant = molecule("H2O")
    ts = reactant.copy()
    ts.positions[1] += [0.0, 0.2, 0.1]
    model = TableModel(
        [
            (reactant, -10.0, hessian_with_eigenvalues(reactant, WATER_LAM)),
            (ts, -9.5, hessian_with_eigenvalues(ts, TS_LAM)),
        ]
    )
    return reactant, ts, model


def test_free_energy_barrier_is_the_difference_of_thermochemistries(reaction):
    reactant, ts, model = reaction
    barrier = free_energy_barrier(reactant, ts, model, temperature_K=400.0)
    r = thermo(reactant, model, temperature_K=400.0)
    t = thermo(ts, model, temperature_K=400.0, allow_saddle=True)
    assert barrier.delta_e_eV == pytest.approx(0.5)
    assert barrier.delta_e_kcal_per_mol == pytest.approx(11.530, abs=1e-3)  # 0.5 eV
    assert barrier.delta_h_eV == pytest.approx(t.enthalpy_eV - r.enthalpy_eV)
    assert barrier.delta_g_eV == pytest.approx(t.gibbs_eV - r.gibbs_eV)
    assert barrier.delta_g_kcal_per_mol == pytest.approx(barrier.delta_g_eV / EV_PER_KCAL_MOL)
    assert barrier.imaginary_cm1 == pytest.approx(cm1(-6.0))
    # the TS lost a mode and has lower ZPE: ΔH‡ < ΔE‡ here
    assert barrier.delta_h_eV < barrier.delta_e_eV
    # precomputed ThermoResults give the same barrier
    again = free_energy_barrier(r, t, temperature_K=400.0)
    assert again.delta_g_eV == pytest.approx(barrier.delta_g_eV)


def test_rate_is_eyring_of_the_barrier(reaction):
    reactant, ts, model = reaction
    result = rate(reactant, ts, model, 350.0, transmission=0.7)
    assert result.k_per_s == pytest.approx(eyring_rate(result.barrier.delta_g_eV, 350.0, 0.7))
    assert result.temperature_K == 350.0


def test_saddle_reactant_refused_naming_its_imaginary_mode(reaction):
    reactant, ts, model = reaction
    with pytest.raises(ChemistryError) as err:
        free_energy_barrier(ts, reactant, model)
    message = str(err.value)
    assert message.startswith("the reactant has saddle index 1")
    assert f"{cm1(-6.0):.1f} cm^-1" in message


def test_minimum_as_ts_refused_naming_its_lowest_mode(reaction):
    reactant, _, model = reaction
    with pytest.raises(ChemistryError) as err:
        free_energy_barrier(reactant, reactant, model)
    message = str(err.value)
    assert "transition state has no imaginary mode" in message
    assert f"{cm1(WATER_LAM[0]):.1f} cm^-1" in message


def test_thermo_results_at_other_conditions_are_refused(reaction):
    reactant, ts, model = reaction
    r = thermo(reactant, model, temperature_K=300.0)
    t = thermo(ts, model, temperature_K=300.0, allow_saddle=True)
    with pytest.raises(ChemistryError, match="300.0 K"):
        free_energy_barrier(r, t, temperature_K=500.0)
    assert isinstance(r, ThermoResult)


def test_different_atoms_refused(reaction):
    reactant, _, model = reaction
    with pytest.raises(ChemistryError, match="different atoms"):
        free_energy_barrier(reactant, molecule("NH3"), model)


# ----------------------------------------------------------------------------- hip rate
@pytest.fixture
def rate_files(reaction, tmp_path, monkeypatch):
    reactant, ts, model = reaction
    write(tmp_path / "r.xyz", reactant)
    write(tmp_path / "ts.xyz", ts)
    monkeypatch.setattr(analysis_commands, "model_from_argument", lambda args: model)
    return tmp_path / "r.xyz", tmp_path / "ts.xyz"


def test_main_rate_json(rate_files, capsys):
    r, ts = rate_files
    assert main_rate([str(r), str(ts), "--T", "310", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["temperature_K"] == 310.0
    assert data["delta_e_eV"] == pytest.approx(0.5, abs=1e-9)
    assert data["k_per_s"] == pytest.approx(eyring_rate(data["delta_g_eV"], 310.0))
    assert data["imaginary_cm1"] == pytest.approx(cm1(-6.0))
    assert data["ts"]["saddle_index"] == 1 and data["reactant"]["saddle_index"] == 0


def test_main_rate_text(rate_files, capsys):
    r, ts = rate_files
    assert main_rate([str(r), str(ts)]) == 0
    out = capsys.readouterr().out
    assert "ΔG‡" in out and "kcal/mol" in out and "s^-1" in out
    assert "11.53 kcal/mol" in out  # ΔE‡ = 0.5 eV
    assert f"{cm1(-6.0):.1f} cm^-1" in out


def test_main_rate_errors_are_one_line(rate_files, capsys):
    r, ts = rate_files
    assert main_rate([str(ts), str(r)]) == 2  # swapped: the reactant is a saddle
    err = capsys.readouterr().err
    assert err.startswith("hip rate: error: the reactant has saddle index 1")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main_rate([str(r), str(r.parent / "missing.xyz")]) == 2
    assert "missing.xyz: no such file" in capsys.readouterr().err
    assert main_rate([str(r)]) == 2  # usage error from argparse
    assert main_rate([str(r), str(ts), "--T", "-3"]) == 2
    assert "temperature must be positive" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real Hessians
@pytest.mark.chem
def test_thermo_of_xtb_water_matches_ase_vibrations():
    """GFN2-xTB water at its minimum: our Eckart-projected thermochemistry against ASE's own
    VibrationsData frequencies fed to IdealGasThermo."""
    pytest.importorskip("tblite.ase")
    from ase.optimize import BFGS
    from ase.vibrations import VibrationsData
    from tblite.ase import TBLite

    from hip_head.finetune.labels import label_xtb

    water = molecule("H2O")
    water.calc = TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0)
    BFGS(water, logfile=None).run(fmax=1e-4, steps=100)
    water.calc = None
    sample = label_xtb(water)
    h = sample.hessian.reshape(9, 9)
    result = thermo(water, hessian=h, energy=sample.energy, symmetry_number=2)
    ase_energies = VibrationsData.from_2d(water, h).get_energies()
    ref = IdealGasThermo(
        ase_energies, "nonlinear", sample.energy, atoms=water, symmetrynumber=2, spin=0
    )
    assert result.frequencies_cm1 == pytest.approx(
        np.sort(np.real(ref.vib_energies)) / units.invcm, abs=2.0
    )
    assert result.gibbs_eV == pytest.approx(ref.get_gibbs_energy(T, P, verbose=False), abs=2e-4)
    assert result.entropy_eV_per_K == pytest.approx(ref.get_entropy(T, P, verbose=False), rel=1e-4)
