"""Reference Hessian labels of one structure from quantum chemistry: GFN-xTB and PySCF.

Every labeller returns a :class:`~hip_head.finetune.data.HessianSample` in hip-head's units and
layout: energy eV, forces (N, 3) eV/Å, Hessian flat ``((3N)**2,)`` eV/Å², the row-major
(3N, 3N) matrix with index ``3a + α``.

- :func:`label_xtb`: GFN1/GFN2-xTB through ``tblite.ase.TBLite``; the Hessian by central
  differences of the analytic gradients (6N gradient calls), symmetrised.
- :func:`label_pyscf`: RHF/UHF/RKS/UKS analytic Hessian from PySCF (``mf.Hessian().kernel()``),
  converted from Hartree/Bohr² to eV/Å².
- :func:`xtb_calculator` and :func:`xtb_hessian`: the tblite calculator and the (3N, 3N) xTB
  Hessian that the samplers, the reaction search and :class:`hip_head.chem.potentials.
  XTBPotential` share.

Charge and spin come from the arguments or ``atoms.info["charge"]`` (e) and ``atoms.info
["spin"]`` (the multiplicity 2S + 1). Labelling many structures into a database, resumably:
:mod:`hip_head.finetune.labels`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from ase import Atoms, units

from hip_head.autograd import finite_difference_hessian
from hip_head.errors import HIPError, InvalidArgumentError
from hip_head.finetune.data import HessianSample
from hip_head.units import hartree_per_bohr2_to_ev_per_a2

__all__ = [
    "ENGINES",
    "LabelError",
    "charge_and_spin",
    "label_pyscf",
    "label_xtb",
    "level_of_theory",
    "xtb_calculator",
    "xtb_hessian",
]


class LabelError(HIPError, RuntimeError):
    """A reference calculation failed (SCF not converged, inconsistent charge/spin, ...)."""


# ---------------------------------------------------------------------------------- xTB
def charge_and_spin(
    atoms: Atoms, charge: int | None = None, spin: int | None = None
) -> tuple[int, int]:
    """``(charge e, multiplicity 2S + 1)``: the arguments where given, else
    ``atoms.info["charge"]`` (default 0) and ``atoms.info["spin"]`` (default 1)."""
    return (
        int(atoms.info.get("charge", 0) if charge is None else charge),
        int(atoms.info.get("spin", 1) if spin is None else spin),
    )


def xtb_calculator(
    method: str = "GFN2-xTB",
    charge: int = 0,
    spin: int = 1,
    accuracy: float = 0.01,
    **calc_options: Any,
) -> Any:
    """A quiet ``tblite.ase.TBLite`` calculator (energy eV, forces eV/Å).

    Args:
        method: ``"GFN2-xTB"``, ``"GFN1-xTB"`` or ``"IPEA1-xTB"``.
        charge: total charge, e.
        spin: spin multiplicity 2S + 1.
        accuracy: tblite's numerical accuracy (see :func:`label_xtb`).
        **calc_options: more ``TBLite`` keywords (e.g. ``electronic_temperature``).
    """
    from tblite.ase import TBLite

    return TBLite(
        method=method,
        charge=int(charge),
        multiplicity=int(spin),
        accuracy=accuracy,
        verbosity=0,
        **calc_options,
    )


def label_xtb(
    atoms: Atoms,
    method: str = "GFN2-xTB",
    step: float = 1e-3,
    charge: int | None = None,
    spin: int | None = None,
    accuracy: float = 0.01,
    **calc_options: Any,
) -> HessianSample:
    """Label one structure with GFN-xTB (tblite).

    Energy and forces are tblite's analytic values at ``atoms``. The Hessian is the central
    difference of the analytic forces, column ``3a + α`` = ``-(F(x + h e) - F(x - h e)) / 2h``
    (6N gradient calls; truncation error O(h²)), then symmetrised as ``(H + Hᵀ) / 2``; the
    asymmetry removed is kept in ``meta["fd_asymmetry"]`` (max |H - Hᵀ| / 2, eV/Å²) as an error
    estimate.

    Args:
        atoms: the structure (N atoms, positions Å); not modified.
        method: ``"GFN2-xTB"``, ``"GFN1-xTB"`` or ``"IPEA1-xTB"``.
        step: finite-difference displacement h, Å.
        charge: total charge, e; None: ``atoms.info["charge"]`` or 0.
        spin: spin multiplicity 2S + 1 (the :class:`HessianSample` convention); None:
            ``atoms.info["spin"]`` or 1.
        accuracy: tblite's numerical accuracy (SCF and integral thresholds; tblite's default is
            1.0). The default 0.01 costs ~30% more time than 1.0 but cuts the SCF noise in the
            forces ~100-fold: at 1.0 the forces carry ~1e-4 eV/Å of noise, i.e. ~0.05 eV/Å² of
            noise in a Hessian with h = 1e-3 Å (measured ``fd_asymmetry``: water 0.023 vs
            0.0002, a 20-atom dimer 0.10 vs 0.001 eV/Å²).
        **calc_options: more ``tblite.ase.TBLite`` keywords (e.g. ``accuracy``,
            ``electronic_temperature``, ``solvation``).

    Returns:
        The sample: energy eV, forces (N, 3) eV/Å, Hessian ((3N)²,) eV/Å², charge, spin
        (multiplicity) and ``meta`` with ``engine``, ``method``, ``step``, ``accuracy``,
        ``fd_asymmetry``, ``seconds``.

    Raises:
        LabelError: tblite failed (SCF not converged, electrons/multiplicity inconsistent, ...).
    """
    t0 = time.perf_counter()
    charge, spin = charge_and_spin(atoms, charge, spin)
    work = Atoms(numbers=atoms.get_atomic_numbers(), positions=atoms.get_positions())
    work.calc = xtb_calculator(method, charge, spin, accuracy, **calc_options)

    def forces_fn(positions: np.ndarray) -> np.ndarray:
        work.set_positions(positions)
        return work.get_forces()

    try:
        x0 = atoms.get_positions()
        hessian = finite_difference_hessian(forces_fn, x0, step=step)
        work.set_positions(x0)
        energy = work.get_potential_energy()
        forces = work.get_forces()
    except Exception as exc:  # noqa: BLE001 - tblite raises CalculationFailed, RuntimeError...
        raise LabelError(f"tblite {method} failed: {exc}") from exc
    asym = 0.5 * float(np.abs(hessian - hessian.T).max())
    hessian = 0.5 * (hessian + hessian.T)
    return HessianSample(
        positions=x0,
        numbers=atoms.get_atomic_numbers(),
        energy=float(energy),
        forces=np.array(forces, dtype=np.float64),
        hessian=hessian.reshape(-1),
        charge=charge,
        spin=spin,
        meta={
            "engine": "xtb",
            "method": method,
            "step": float(step),
            "accuracy": float(accuracy),
            "fd_asymmetry": asym,
            "seconds": time.perf_counter() - t0,
        },
    )


def xtb_hessian(
    atoms: Atoms, method: str = "GFN2-xTB", accuracy: float = 0.01, **options: Any
) -> np.ndarray:
    """The GFN-xTB Hessian (3N, 3N), eV/Å², of ``atoms`` (:func:`label_xtb`; usable as Sella's
    ``hessian_function``).

    Args:
        atoms: the structure (N atoms, Å; charge and spin from ``info`` unless in ``options``).
        method: tblite method.
        accuracy: tblite accuracy.
        **options: more :func:`label_xtb` keywords (``step``, ``charge``, ``spin``, ...).

    Raises:
        LabelError: tblite failed.
    """
    n3 = 3 * len(atoms)
    sample = label_xtb(atoms, method=method, accuracy=accuracy, **options)
    return np.asarray(sample.hessian, dtype=np.float64).reshape(n3, n3)


# ---------------------------------------------------------------------------------- PySCF
_PYSCF_METHODS = ("RHF", "UHF", "RKS", "UKS")


def label_pyscf(
    atoms: Atoms,
    method: str = "RKS",
    xc: str = "wb97x",
    basis: str = "6-31g(d)",
    charge: int | None = None,
    spin: int | None = None,
    max_memory: int = 4000,
    conv_tol: float = 1e-10,
) -> HessianSample:
    """Label one structure with a PySCF analytic Hessian.

    PySCF's Hessian ``mf.Hessian().kernel()`` has shape (N, N, 3, 3) in Hartree/Bohr²; it is
    transposed to (N, 3, N, 3), reshaped to (3N, 3N) (index ``3a + α``), converted to eV/Å²
    with :func:`hip_head.units.hartree_per_bohr2_to_ev_per_a2` and symmetrised (the analytic
    Hessian is symmetric up to CPHF convergence). Energy Hartree → eV and forces
    ``-gradient`` Hartree/Bohr → eV/Å use ``ase.units``.

    Args:
        atoms: the structure (positions Å); not modified.
        method: ``"RHF"``, ``"UHF"``, ``"RKS"`` or ``"UKS"`` (KS methods use ``xc``).
        xc: exchange-correlation functional (PySCF/libxc name), for RKS/UKS only.
        basis: basis set name.
        charge: total charge, e; None: ``atoms.info["charge"]`` or 0.
        spin: 2S = N_alpha − N_beta (**PySCF's convention**, not the multiplicity); None:
            ``atoms.info["spin"] - 1`` (info holds the multiplicity) or 0. The returned sample
            stores the multiplicity ``spin + 1``.
        max_memory: PySCF memory limit, MB.
        conv_tol: SCF energy convergence threshold, Hartree.

    Returns:
        The sample: energy eV, forces (N, 3) eV/Å, Hessian ((3N)²,) eV/Å², charge,
        spin (multiplicity) and ``meta`` with ``engine``, ``method``, ``xc``, ``basis``,
        ``seconds``.

    Raises:
        LabelError: the SCF did not converge, or PySCF rejected the molecule (e.g. a charge and
            spin inconsistent with the electron count).
        ValueError: an unknown ``method``.
    """
    from pyscf import dft, gto, scf

    method = method.upper()
    if method not in _PYSCF_METHODS:
        raise InvalidArgumentError(f"method must be one of {_PYSCF_METHODS}; got {method!r}")
    t0 = time.perf_counter()
    charge = int(atoms.info.get("charge", 0) if charge is None else charge)
    spin = int(atoms.info.get("spin", 1) - 1 if spin is None else spin)  # PySCF's 2S
    try:
        mol = gto.M(
            atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            unit="Angstrom",
            basis=basis,
            charge=charge,
            spin=spin,
            verbose=0,
            max_memory=max_memory,
        )
    except Exception as exc:  # noqa: BLE001 - PySCF raises RuntimeError/KeyError/...
        raise LabelError(f"PySCF rejected the molecule: {exc}") from exc
    if method in ("RKS", "UKS"):
        mf = (dft.RKS if method == "RKS" else dft.UKS)(mol, xc=xc)
    else:
        mf = (scf.RHF if method == "RHF" else scf.UHF)(mol)
    mf.conv_tol = conv_tol
    energy = mf.kernel()
    if not mf.converged:
        raise LabelError(
            f"PySCF {method} SCF not converged in {mf.max_cycle} cycles (last E = {energy} Ha)"
        )
    try:
        gradient = np.asarray(mf.nuc_grad_method().kernel(), dtype=np.float64)  # (N, 3) Ha/Bohr
        hess_au = np.asarray(mf.Hessian().kernel(), dtype=np.float64)  # (N, N, 3, 3) Ha/Bohr²
    except Exception as exc:  # noqa: BLE001
        raise LabelError(f"PySCF gradient/Hessian failed: {exc}") from exc
    n = len(atoms)
    hessian = hartree_per_bohr2_to_ev_per_a2(hess_au.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n))
    hessian = 0.5 * (hessian + hessian.T)
    return HessianSample(
        positions=atoms.get_positions(),
        numbers=atoms.get_atomic_numbers(),
        energy=float(energy) * units.Hartree,
        forces=-gradient * (units.Hartree / units.Bohr),
        hessian=hessian.reshape(-1),
        charge=charge,
        spin=spin + 1,
        meta={
            "engine": "pyscf",
            "method": method,
            "xc": xc if method in ("RKS", "UKS") else "",
            "basis": basis,
            "seconds": time.perf_counter() - t0,
        },
    )


# ---------------------------------------------------------------------------------- engines
#: Engine name -> labeller ``f(atoms, **options) -> HessianSample``.
ENGINES: dict[str, Callable[..., HessianSample]] = {"xtb": label_xtb, "pyscf": label_pyscf}


def level_of_theory(engine: str, options: dict[str, Any]) -> str:
    """Level-of-theory tag stored with each row, e.g. ``xtb:GFN2-xTB``, ``pyscf:RKS/wb97x/...``."""
    if engine == "xtb":
        return f"xtb:{options.get('method', 'GFN2-xTB')}"
    if engine == "pyscf":
        method = str(options.get("method", "RKS")).upper()
        xc = f"/{options.get('xc', 'wb97x')}" if method in ("RKS", "UKS") else ""
        return f"pyscf:{method}{xc}/{options.get('basis', '6-31g(d)')}"
    return engine
