"""Eckart-projected vibrational analysis (hip_head.vibrations) on toy force fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.vibrations import VibrationsData
from scipy.spatial.transform import Rotation

from hip_head.units import HARTREE_PER_BOHR2_IN_EV_PER_A2
from hip_head.vibrations import (
    HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU,
    VibrationalAnalysis,
    eckart_projector,
    eigenvalue_to_cm1,
    frequencies,
    saddle_index,
    vibrational_analysis,
    zero_point_energy,
)

# ---------------------------------------------------------------------------------- molecules
_T = 0.629  # tetrahedral C-H offset per axis, Å (C-H ≈ 1.09 Å)
MOLECULES = {
    "H2O": ("OHH", [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]]),
    "CH4": ("CHHHH", [[0, 0, 0], [_T, _T, _T], [-_T, -_T, _T], [-_T, _T, -_T], [_T, -_T, -_T]]),
    "CO2": ("OCO", [[-1.16, 0, 0], [0, 0, 0], [1.16, 0, 0]]),
    "N2": ("NN", [[0, 0, 0], [0, 0, 1.098]]),
}
# bonds of the linear bending term: (end, centre, end)
BENDS = {"CO2": [(0, 1, 2)]}
MORSE_DEPTH, MORSE_A = 5.0, 2.0  # eV, 1/Å


def toy_energy(x: torch.Tensor, ref: torch.Tensor, bends=(), sign_hh=None) -> torch.Tensor:
    """Morse springs between all pairs at their reference lengths (a minimum at ``ref``), plus
    a linear-bend term k |r_i + r_k - 2 r_j|^2. ``sign_hh``: pair whose spring is inverted."""
    n = x.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)
    r = (x[i] - x[j]).norm(dim=-1)
    r0 = (ref[i] - ref[j]).norm(dim=-1)
    e = MORSE_DEPTH * (1 - torch.exp(-MORSE_A * (r - r0))) ** 2
    if sign_hh is not None:
        flip = (i == sign_hh[0]) & (j == sign_hh[1])
        e = torch.where(flip, -0.3 * e, e)
    energy = e.sum()
    for a, c, b in bends:
        energy = energy + 3.0 * ((x[a] + x[b] - 2 * x[c]) ** 2).sum()
    return energy


def hessian_at(x: np.ndarray, ref: np.ndarray, **kwargs) -> np.ndarray:
    xt, rt = torch.tensor(x, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64)
    n = xt.shape[0]
    h = torch.autograd.functional.hessian(
        lambda v: toy_energy(v.view(n, 3), rt, **kwargs), xt.reshape(-1)
    )
    return h.numpy()


def molecule(name: str) -> tuple[Atoms, np.ndarray]:
    """The molecule and its Hessian at the force field minimum, eV/Å²."""
    symbols, pos = MOLECULES[name]
    atoms = Atoms(symbols, positions=pos)
    ref = atoms.get_positions()
    return atoms, hessian_at(ref, ref, bends=BENDS.get(name, ()))


def random_rigid(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return Rotation.random(random_state=seed).as_matrix(), rng.normal(size=3) * 3


# ---------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    ("name", "n_modes", "linear"),
    [("H2O", 3, False), ("CH4", 9, False), ("CO2", 4, True), ("N2", 1, True)],
)
def test_mode_counts_and_minimum(name, n_modes, linear):
    atoms, h = molecule(name)
    vib = vibrational_analysis(h, atoms)
    assert isinstance(vib, VibrationalAnalysis)
    assert vib.is_linear is linear
    assert vib.frequencies_cm1.shape == (n_modes,) and vib.n_modes == n_modes
    assert vib.eigenvalues.shape == (n_modes,)
    assert vib.modes.shape == (n_modes, len(atoms), 3)
    assert np.all(np.diff(vib.frequencies_cm1) >= 0)
    assert vib.frequencies_cm1[0] > 50  # a true minimum: all modes real and stiff
    assert vib.n_imaginary == 0 and vib.n_negative_hip == 0
    np.testing.assert_allclose(np.linalg.norm(vib.modes.reshape(n_modes, -1), axis=1), 1.0)
    mw = vib.mass_weighted_modes
    np.testing.assert_allclose(mw @ mw.T, np.eye(n_modes), atol=1e-12)


def test_single_atom_has_no_modes():
    vib = vibrational_analysis(np.zeros((3, 3)), Atoms("Ar", positions=[[1, 2, 3]]))
    assert vib.frequencies_cm1.shape == (0,) and vib.zero_point_energy == 0.0
    assert not vib.is_linear


def test_n2_matches_analytic_frequency():
    atoms, h = molecule("N2")
    k = 2 * MORSE_DEPTH * MORSE_A**2 * units._e / 1e-20  # J/m²
    m = atoms.get_masses()[0] * units._amu
    wavenumber = np.sqrt(k / (m / 2)) / (2 * np.pi * units._c) / 100  # cm⁻¹
    np.testing.assert_allclose(frequencies(h, atoms), [wavenumber], rtol=1e-10)


@pytest.mark.parametrize("name", ["H2O", "CH4", "CO2"])
def test_matches_ase_at_a_stationary_point(name):
    # At a stationary point of an invariant energy the rigid-body eigenvalues vanish exactly,
    # so ASE (no projection) and Eckart projection agree on the vibrational modes.
    atoms, h = molecule(name)
    ours = frequencies(h, atoms)
    ase_freqs = VibrationsData.from_2d(atoms, h).get_frequencies()
    ase_real = np.sort(ase_freqs.real - ase_freqs.imag)[-len(ours) :]
    np.testing.assert_allclose(ours, ase_real, rtol=1e-7, atol=1e-4)


def test_rigid_body_contamination_is_projected_out():
    # A noisy model may give rigid-body curvature: Eckart removes it, ASE's frequencies move.
    atoms, h = molecule("H2O")
    masses = np.repeat(atoms.get_masses(), 3)
    p = eckart_projector(atoms.get_positions(), atoms.get_masses())
    ext = np.eye(9) - p  # projector on the mass-weighted rigid-body space
    sqrt_m = np.sqrt(masses)
    h_bad = h + 0.7 * (sqrt_m[:, None] * ext * sqrt_m[None, :])
    np.testing.assert_allclose(frequencies(h_bad, atoms), frequencies(h, atoms), atol=1e-8)


@pytest.mark.parametrize("name", ["H2O", "CH4", "CO2"])
def test_rotation_and_translation_invariance_off_equilibrium(name):
    symbols, pos = MOLECULES[name]
    ref = np.array(pos, dtype=float)
    rng = np.random.default_rng(1)
    x = ref + 0.05 * rng.normal(size=ref.shape)  # not a stationary point
    bends = BENDS.get(name, ())
    h = hessian_at(x, ref, bends=bends)
    rot, shift = random_rigid(3)
    x2, ref2 = x @ rot.T + shift, ref @ rot.T + shift
    h2 = hessian_at(x2, ref2, bends=bends)
    masses = Atoms(symbols).get_masses()
    vib1 = vibrational_analysis(h, (x, masses), linear=bool(BENDS.get(name)))
    vib2 = vibrational_analysis(h2, (x2, masses), linear=bool(BENDS.get(name)))
    np.testing.assert_allclose(vib1.frequencies_cm1, vib2.frequencies_cm1, rtol=1e-8, atol=1e-6)
    # the Hessian transformed as (I ⊗ Q) H (I ⊗ Q)ᵀ gives the same as well
    big = np.kron(np.eye(len(masses)), rot)
    h3 = big @ h @ big.T
    np.testing.assert_allclose(frequencies(h3, (x2, masses)), vib1.frequencies_cm1, atol=1e-6)
    # the modes rotate with the molecule (up to sign; modes here are non-degenerate)
    rotated = vib1.modes @ rot.T
    overlap = np.abs(np.einsum("kai,kai->k", rotated, vib2.modes))
    nondegenerate = np.min(np.abs(np.diff(vib1.frequencies_cm1))) > 1.0
    if nondegenerate:
        np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_saddle_point_has_one_imaginary_mode():
    symbols, pos = MOLECULES["H2O"]
    ref = np.array(pos, dtype=float)
    h = hessian_at(ref, ref, sign_hh=(1, 2))  # H-H spring inverted: a first-order saddle
    atoms = Atoms(symbols, positions=ref)
    vib = vibrational_analysis(h, atoms)
    assert vib.frequencies_cm1.shape == (3,)
    assert vib.frequencies_cm1[0] < -100 and np.all(vib.frequencies_cm1[1:] > 100)
    assert vib.n_imaginary == 1 and vib.n_negative_hip == 1
    assert saddle_index(h, atoms) == 1
    minimum_atoms, minimum_h = molecule("H2O")
    assert saddle_index(minimum_h, minimum_atoms) == 0
    # ZPE counts real modes only
    expected = 0.5 * np.sum(vib.frequencies_cm1[1:]) * units.invcm
    assert zero_point_energy(h, atoms) == pytest.approx(expected, rel=1e-12)


def test_imaginary_mode_below_the_rigid_body_block_is_kept():
    # Build H with known internal spectrum; "drop the six lowest" would lose the -0.5 mode.
    atoms, _ = molecule("CH4")
    pos, masses = atoms.get_positions(), atoms.get_masses()
    p = eckart_projector(pos, masses)
    w, v = np.linalg.eigh(p)
    internal = v[:, w > 0.5]  # [15, 9]
    spectrum = np.array([-0.5, 1e-3, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])  # eV/Å²/amu
    h_mw = internal @ np.diag(spectrum) @ internal.T
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    h = sqrt_m[:, None] * h_mw * sqrt_m[None, :]
    vib = vibrational_analysis(h, atoms)
    np.testing.assert_allclose(vib.eigenvalues, spectrum, atol=1e-12)
    np.testing.assert_allclose(vib.frequencies_cm1, eigenvalue_to_cm1(spectrum))
    assert vib.n_imaginary == 1


def test_thresholds_hip_count_and_cm1():
    # HIP counts λ < -1e-6 Ha/Bohr²/amu (≈ -5.1 cm⁻¹); our default imaginary threshold is 10 cm⁻¹
    lam = -2 * HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU * HARTREE_PER_BOHR2_IN_EV_PER_A2
    assert eigenvalue_to_cm1([lam])[0] == pytest.approx(-5.1 * np.sqrt(2), rel=0.01)
    atoms, _ = molecule("H2O")
    pos, masses = atoms.get_positions(), atoms.get_masses()
    w, v = np.linalg.eigh(eckart_projector(pos, masses))
    internal = v[:, w > 0.5]
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    h = sqrt_m[:, None] * (internal @ np.diag([lam, 0.3, 0.9]) @ internal.T) * sqrt_m[None, :]
    vib = vibrational_analysis(h, atoms)
    assert vib.n_negative_hip == 1 and vib.n_imaginary == 0
    assert vibrational_analysis(h, atoms, threshold_cm1=5.0).n_imaginary == 1


def test_zero_point_energy_is_half_sum_h_nu():
    atoms, h = molecule("CH4")
    nu = frequencies(h, atoms)  # cm⁻¹
    expected = 0.5 * np.sum(units._hplanck * units._c * 100 * nu) / units._e
    assert zero_point_energy(h, atoms) == pytest.approx(expected, rel=1e-6)
    vib = vibrational_analysis(h, atoms)
    np.testing.assert_allclose(vib.energies, nu * units.invcm)


@pytest.mark.parametrize(("name", "rank"), [("H2O", 3), ("CO2", 4), ("N2", 1), ("CH4", 9)])
def test_eckart_projector_properties(name, rank):
    atoms, _ = molecule(name)
    pos, masses = atoms.get_positions() + 2.0, atoms.get_masses()  # off-origin on purpose
    p = eckart_projector(pos, masses)
    np.testing.assert_allclose(p, p.T, atol=1e-13)
    np.testing.assert_allclose(p @ p, p, atol=1e-12)
    assert np.trace(p) == pytest.approx(rank)
    sqrt_m = np.sqrt(masses)[:, None]
    com = masses @ pos / masses.sum()
    for axis in np.eye(3):
        translation = (sqrt_m * axis * np.ones_like(pos)).reshape(-1)
        rotation = (sqrt_m * np.cross(axis, pos - com)).reshape(-1)
        assert np.abs(p @ translation).max() < 1e-12
        assert np.abs(p @ rotation).max() < 1e-12
    assert np.trace(eckart_projector([[0.0, 0.0, 0.0]], [4.0])) == pytest.approx(0.0)


def test_near_linear_tolerance():
    masses = Atoms("OCO").get_masses()
    for angle, linear in [(179.5, True), (170.0, False)]:
        half = np.radians(angle / 2)
        pos = np.array([[-1.16 * np.sin(half), 1.16 * np.cos(half), 0], [0, 0, 0], [0, 0, 0]])
        pos[2] = pos[0] * [-1, 1, 1]
        h = np.eye(9)
        vib = vibrational_analysis(h, (pos, masses))
        assert vib.is_linear is linear
        assert vib.n_modes == (4 if linear else 3)
    assert vibrational_analysis(h, (pos, masses), linear=True).n_modes == 4


def test_input_types_and_layouts():
    atoms, h = molecule("H2O")
    ref = frequencies(h, atoms)
    n = len(atoms)
    positions = torch.tensor(atoms.get_positions(), dtype=torch.float32)
    masses = torch.tensor(atoms.get_masses())
    np.testing.assert_allclose(
        frequencies(torch.tensor(h, dtype=torch.float32), (positions, masses)), ref, rtol=1e-4
    )
    np.testing.assert_allclose(frequencies(h.reshape(n, 3, n, 3), atoms), ref)
    np.testing.assert_allclose(frequencies(h.reshape(3 * n, n, 3), atoms), ref)
    np.testing.assert_allclose(frequencies(h.reshape(-1), atoms), ref)
    with pytest.raises(ValueError, match="does not fit"):
        frequencies(np.zeros((6, 6)), atoms)
    with pytest.raises(TypeError):
        frequencies(h, 3)
