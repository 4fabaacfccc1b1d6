"""Harmonic vibrational analysis of a Hessian: Eckart projection, frequencies, ZPE, saddle index.

Protocol (pysisyphus / geomeTRIC / HIP convention): symmetrise H, mass-weight it
(``M^-1/2 H M^-1/2``, amu), project out the rigid-body subspace (3 translations and 3 rotations,
or 2 rotations for linear molecules, none for a single atom) by the Eckart projector, and
diagonalise the Hessian *restricted to the complement* of that subspace. Exactly 3N − 6 (3N − 5
for linear molecules, 0 for one atom) values come out, with no "drop the six lowest modes"
heuristic: a genuine imaginary mode below the rigid-body block is never lost.

Units (ASE's): Hessians eV/Å², positions Å, masses amu, mass-weighted eigenvalues eV/Å²/amu,
frequencies cm⁻¹ with imaginary frequencies reported as negative numbers, energies eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

from hip_head.errors import InvalidArgumentError, InvalidStructureError
from hip_head.graph import MIN_INTERATOMIC_DISTANCE
from hip_head.units import HARTREE_PER_BOHR2_IN_EV_PER_A2

__all__ = [
    "DEFAULT_IMAGINARY_THRESHOLD_CM1",
    "DEFAULT_LINEAR_TOL",
    "HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU",
    "VibrationalAnalysis",
    "eckart_projector",
    "eigenvalue_to_cm1",
    "frequencies",
    "saddle_index",
    "vibrational_analysis",
    "zero_point_energy",
]

#: Frequencies below minus this many cm⁻¹ count as imaginary modes (``n_imaginary``,
#: :func:`saddle_index`). Smaller imaginary values are usually numerical noise (soft torsions,
#: loosely converged geometries, float32 models).
DEFAULT_IMAGINARY_THRESHOLD_CM1: float = 10.0

#: A structure is linear when its smallest principal moment of inertia is below this fraction of
#: the largest (for a triatomic, roughly within 2–3° of 180°).
DEFAULT_LINEAR_TOL: float = 1e-3

#: With ``symmetrize=False``: largest max |H − Hᵀ| accepted, relative to max |H|.
SYMMETRY_RTOL: float = 1e-8

#: HIP / HORM count of negative Eckart eigenvalues: λ < −1e-6 in Hartree/Bohr²/amu
#: (≈ 5.1i cm⁻¹).
HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU: float = 1e-6

#: ħω (eV) of a mass-weighted eigenvalue of 1 eV/Å²/amu (ASE ``VibrationsData``'s factor).
_EIGENVALUE_TO_EV: float = units._hbar * 1e10 / np.sqrt(units._e * units._amu)

ArrayLike = np.ndarray | torch.Tensor
AtomsLike = Atoms | tuple[ArrayLike, ArrayLike]


def _as_numpy(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _positions_masses(atoms: AtomsLike) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(atoms, Atoms):
        positions, masses = atoms.get_positions(), atoms.get_masses()
    else:
        try:
            positions, masses = atoms
        except (TypeError, ValueError) as err:
            raise TypeError(
                "atoms must be an ase.Atoms or a (positions [N, 3] Å, masses [N] amu) pair"
            ) from err
    positions, masses = _as_numpy(positions), _as_numpy(masses).reshape(-1)
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] != masses.shape[0]:
        raise InvalidArgumentError(
            f"positions must be [N, 3] and masses [N]; got {positions.shape} and {masses.shape}"
        )
    if positions.shape[0] == 0:
        raise InvalidArgumentError("the structure has no atoms")
    if not np.all(masses > 0) or not np.all(np.isfinite(masses)):
        raise InvalidArgumentError(
            f"masses must be positive and finite (amu); got {masses.tolist()}"
        )
    if not np.all(np.isfinite(positions)):
        raise InvalidStructureError("positions contain NaN/inf")
    if positions.shape[0] > 1:
        span = float(np.ptp(positions, axis=0).max())
        if span < MIN_INTERATOMIC_DISTANCE:
            raise InvalidStructureError(
                f"all {positions.shape[0]} atoms lie within {span:.3g} Å of each other "
                f"(coincident; minimum distance {MIN_INTERATOMIC_DISTANCE} Å): no rotations "
                "can be told apart, so there are no vibrational modes to analyse"
            )
    return positions, masses


def eigenvalue_to_cm1(eigenvalues: ArrayLike) -> np.ndarray:
    """Convert mass-weighted Hessian eigenvalues to wavenumbers.

    Args:
        eigenvalues: [M] eigenvalues of ``M^-1/2 H M^-1/2``, eV/Å²/amu.

    Returns:
        [M] ``sign(λ) sqrt(|λ|)`` in cm⁻¹ (imaginary frequencies as negative numbers).
    """
    lam = _as_numpy(eigenvalues)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * _EIGENVALUE_TO_EV / units.invcm


def _rigid_body_basis(
    positions: np.ndarray, masses: np.ndarray, linear_tol: float, linear: bool | None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Orthonormal bases of the mass-weighted rigid-body subspace and its complement.

    Returns:
        (external [3N, k], internal [3N, 3N - k], is_linear).
    """
    n = positions.shape[0]
    sqrt_m = np.sqrt(masses)
    com = masses @ positions / masses.sum()
    r = positions - com
    inertia = np.einsum("a,ab,ac->bc", masses, r, r)
    inertia = np.eye(3) * np.trace(inertia) - inertia
    moments, axes = np.linalg.eigh(inertia)  # ascending
    if n == 1 or moments[-1] <= 0.0:
        keep: list[int] = []
        is_linear = False
    else:
        if linear is None:
            linear = bool(moments[0] < linear_tol * moments[-1])
        is_linear = linear
        keep = [1, 2] if is_linear else [0, 1, 2]
    vectors = []
    for alpha in range(3):
        t = np.zeros((n, 3))
        t[:, alpha] = sqrt_m
        vectors.append(t.reshape(-1))
    for k in keep:
        vectors.append((sqrt_m[:, None] * np.cross(axes[:, k], r)).reshape(-1))
    d = np.stack(vectors, axis=1)  # [3N, k]
    u, s, _ = np.linalg.svd(d, full_matrices=True)
    rank = int(np.sum(s > 1e-10 * s[0]))
    return u[:, :rank], u[:, rank:], is_linear


def eckart_projector(
    positions: ArrayLike,
    masses: ArrayLike,
    linear_tol: float = DEFAULT_LINEAR_TOL,
    linear: bool | None = None,
) -> np.ndarray:
    """Projector onto the vibrational subspace, in mass-weighted Cartesian coordinates.

    Builds the mass-weighted translations ``sqrt(m_a) e_α`` and infinitesimal rotations
    ``sqrt(m_a) (u_k × (r_a − r_com))`` about the principal axes, orthonormalises them by SVD
    (dropping null vectors: 6 for non-linear, 5 for linear molecules, 3 for one atom) and
    returns ``P = I − E Eᵀ``. Apply it as ``P (M^-1/2 H M^-1/2) P``.

    Args:
        positions: [N, 3] Cartesian positions, Å.
        masses: [N] atomic masses, amu.
        linear_tol: the structure is linear when its smallest principal moment of inertia is
            below ``linear_tol`` times the largest.
        linear: force (True/False) or auto-detect (None) linearity.

    Returns:
        (3N, 3N) float64 symmetric idempotent projector of rank 3N − 6 (3N − 5 linear,
        3N − 3 for one atom).
    """
    pos, m = _positions_masses((positions, masses))
    external, _, _ = _rigid_body_basis(pos, m, linear_tol, linear)
    return np.eye(3 * pos.shape[0]) - external @ external.T


@dataclass
class VibrationalAnalysis:
    """Result of :func:`vibrational_analysis`; M = 3N − 6 (3N − 5 linear, 0 for one atom).

    Attributes:
        frequencies_cm1: [M] ascending wavenumbers, cm⁻¹; imaginary ones as negative numbers.
        eigenvalues: [M] ascending eigenvalues of the Eckart-projected mass-weighted Hessian,
            eV/Å²/amu.
        modes: [M, N, 3] Cartesian displacement vectors, each of unit Euclidean norm
            (ASE ``VibrationsData.get_modes`` layout).
        mass_weighted_modes: [M, 3N] orthonormal eigenvectors in mass-weighted coordinates.
        n_imaginary: modes with frequency below ``-threshold_cm1``.
        n_negative_hip: the HIP/HORM count, eigenvalues below −1e-6 Hartree/Bohr²/amu
            (about −5.1 cm⁻¹), for comparing with their ``neg_num`` metrics.
        zero_point_energy: ½ Σ ħω over modes with positive eigenvalue, eV.
        is_linear: True for linear structures (two rotations projected out).
        threshold_cm1: the threshold used for ``n_imaginary``, cm⁻¹.
    """

    frequencies_cm1: np.ndarray
    eigenvalues: np.ndarray
    modes: np.ndarray
    mass_weighted_modes: np.ndarray
    n_imaginary: int
    n_negative_hip: int
    zero_point_energy: float
    is_linear: bool
    threshold_cm1: float

    @property
    def n_modes(self) -> int:
        """Number of vibrational modes M."""
        return int(self.frequencies_cm1.shape[0])

    @property
    def energies(self) -> np.ndarray:
        """[M] signed vibrational quanta ħω, eV (negative for imaginary modes)."""
        return self.frequencies_cm1 * units.invcm


def vibrational_analysis(
    hessian: ArrayLike,
    atoms: AtomsLike,
    threshold_cm1: float = DEFAULT_IMAGINARY_THRESHOLD_CM1,
    linear_tol: float = DEFAULT_LINEAR_TOL,
    linear: bool | None = None,
    symmetrize: bool = True,
) -> VibrationalAnalysis:
    """Harmonic frequencies and modes of one structure from its Cartesian Hessian.

    The Hessian is symmetrised, mass-weighted, and restricted to the orthonormal complement of
    the rigid-body subspace (see :func:`eckart_projector`), where it is diagonalised: exactly
    3N − 6 (3N − 5 linear) values, no rigid-body modes to drop.

    Args:
        hessian: Cartesian Hessian, eV/Å², numpy or torch, any float dtype: (3N, 3N), or
            (N, 3, N, 3) (ASE), (3N, N, 3) (MACE) or flat (9N²,), which share one memory order.
        atoms: ``ase.Atoms`` (masses from ``get_masses()``) or ``(positions [N, 3] Å,
            masses [N] amu)``.
        threshold_cm1: frequencies below ``-threshold_cm1`` count as imaginary, cm⁻¹.
        linear_tol: linearity tolerance on the ratio of principal moments of inertia.
        linear: force (True/False) or auto-detect (None) linearity.
        symmetrize: use ``(H + Hᵀ) / 2`` (labels and some models are slightly asymmetric).
            With False the Hessian must already be symmetric (to :data:`SYMMETRY_RTOL` of its
            largest entry), else an error says so; it is used as given.

    Returns:
        The :class:`VibrationalAnalysis` (numpy float64 arrays).

    Raises:
        ValueError: the Hessian's size does not match the number of atoms, it is not symmetric
            with ``symmetrize=False``, or bad atoms (coincident atoms:
            :class:`~hip_head.errors.InvalidStructureError`).
    """
    positions, masses = _positions_masses(atoms)
    n = positions.shape[0]
    h = _as_numpy(hessian)
    if h.size != (3 * n) ** 2:
        raise InvalidArgumentError(
            f"Hessian of shape {h.shape} does not fit {n} atoms: expected (3N, 3N) = "
            f"({3 * n}, {3 * n}) or another layout with {(3 * n) ** 2} entries"
        )
    h = h.reshape(3 * n, 3 * n)
    if not np.all(np.isfinite(h)):
        raise InvalidArgumentError("the Hessian has non-finite entries")
    if symmetrize:
        h = 0.5 * (h + h.T)
    else:
        asymmetry = float(np.abs(h - h.T).max())
        if asymmetry > SYMMETRY_RTOL * max(float(np.abs(h).max()), 1e-300):
            raise InvalidArgumentError(
                f"symmetrize=False but the Hessian is not symmetric (max |H - H^T| = "
                f"{asymmetry:.3g} eV/Å^2): pass symmetrize=True to use (H + H^T) / 2"
            )
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(masses, 3))
    h_mw = h * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    _, internal, is_linear = _rigid_body_basis(positions, masses, linear_tol, linear)
    h_int = internal.T @ h_mw @ internal
    eigenvalues, vectors = np.linalg.eigh(0.5 * (h_int + h_int.T))  # round-off only
    mw_modes = (internal @ vectors).T  # [M, 3N]
    cart = mw_modes * inv_sqrt_m[None, :]
    norms = np.linalg.norm(cart, axis=1, keepdims=True)
    cart = cart / np.where(norms > 0, norms, 1.0)
    freqs = eigenvalue_to_cm1(eigenvalues)
    zpe = 0.5 * float(np.sum(np.sqrt(eigenvalues[eigenvalues > 0]))) * _EIGENVALUE_TO_EV
    n_neg_hip = int(
        np.sum(eigenvalues / HARTREE_PER_BOHR2_IN_EV_PER_A2 < -HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU)
    )
    return VibrationalAnalysis(
        frequencies_cm1=freqs,
        eigenvalues=eigenvalues,
        modes=cart.reshape(-1, n, 3),
        mass_weighted_modes=mw_modes,
        n_imaginary=int(np.sum(freqs < -threshold_cm1)),
        n_negative_hip=n_neg_hip,
        zero_point_energy=zpe,
        is_linear=is_linear,
        threshold_cm1=float(threshold_cm1),
    )


def frequencies(hessian: ArrayLike, atoms: AtomsLike, **kwargs) -> np.ndarray:
    """Eckart-projected harmonic frequencies.

    Args:
        hessian: Cartesian Hessian, eV/Å² (layouts as in :func:`vibrational_analysis`).
        atoms: ``ase.Atoms`` or ``(positions [N, 3] Å, masses [N] amu)``.
        **kwargs: passed to :func:`vibrational_analysis` (``linear_tol``, ``linear``, ...).

    Returns:
        [3N − 6] (3N − 5 linear) ascending frequencies, cm⁻¹, imaginary ones negative.
    """
    return vibrational_analysis(hessian, atoms, **kwargs).frequencies_cm1


def zero_point_energy(hessian: ArrayLike, atoms: AtomsLike, **kwargs) -> float:
    """Harmonic zero-point energy ½ Σ ħω over real (positive-eigenvalue) modes.

    Args:
        hessian: Cartesian Hessian, eV/Å².
        atoms: ``ase.Atoms`` or ``(positions [N, 3] Å, masses [N] amu)``.
        **kwargs: passed to :func:`vibrational_analysis`.

    Returns:
        Zero-point energy, eV.
    """
    return vibrational_analysis(hessian, atoms, **kwargs).zero_point_energy


def saddle_index(
    hessian: ArrayLike,
    atoms: AtomsLike,
    threshold_cm1: float = DEFAULT_IMAGINARY_THRESHOLD_CM1,
    **kwargs,
) -> int:
    """Number of imaginary modes: 0 for a minimum, 1 for a transition state.

    Args:
        hessian: Cartesian Hessian, eV/Å².
        atoms: ``ase.Atoms`` or ``(positions [N, 3] Å, masses [N] amu)``.
        threshold_cm1: frequencies below ``-threshold_cm1`` count, cm⁻¹.
        **kwargs: passed to :func:`vibrational_analysis`.

    Returns:
        The count of Eckart-projected frequencies below ``-threshold_cm1``.
    """
    return vibrational_analysis(hessian, atoms, threshold_cm1=threshold_cm1, **kwargs).n_imaginary
