"""Free-energy barriers and Eyring rates from a HIP's Hessian, with the ideal-gas
thermochemistry they are built on.

:func:`free_energy_barrier` takes a reactant minimum and a transition state (each as
``ase.Atoms`` evaluated with a model, or as the :class:`ThermoResult` of :func:`thermo`) to ΔE‡,
ΔH‡ and ΔG‡; :func:`eyring_rate` and :func:`rate` turn ΔG‡ into a transition-state-theory rate
constant. The single-structure thermochemistry (:func:`thermo`, :class:`ThermoResult`) lives in
:mod:`hip_head.chem.ideal_gas` and is importable from here too.

Units: energies eV (kcal/mol where the name says so), entropies eV/K, temperatures K, pressures
Pa, frequencies cm⁻¹ (imaginary ones as negative numbers), rates s⁻¹. Physical constants are
ASE's (:mod:`ase.units`, CODATA 2014): ``kB`` in eV/K and ``h = _hplanck / _e`` in eV s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ase import Atoms, units

from hip_head.chem._common import ChemistryError
from hip_head.chem.ideal_gas import (
    STANDARD_PRESSURE_PA,
    ThermoResult,
    check_conditions,
    check_temperature,
    thermo,
    thermo_of,
)

__all__ = [
    "EV_PER_KCAL_MOL",
    "Barrier",
    "RateResult",
    "ThermoResult",
    "eyring_rate",
    "free_energy_barrier",
    "rate",
    "thermo",
]

#: One kcal/mol in eV (≈ 0.0433641).
EV_PER_KCAL_MOL: float = units.kcal / units.mol

#: Planck's constant, eV s (ASE's CODATA values).
_H_EV_S: float = units._hplanck / units._e


@dataclass(frozen=True)
class Barrier:
    """Activation energies from a reactant minimum to a transition state (see
    :func:`free_energy_barrier`).

    Attributes:
        delta_e_eV: ΔE‡, electronic energy difference (no ZPE), eV.
        delta_h_eV: ΔH‡(T), eV.
        delta_g_eV: ΔG‡(T, p), eV.
        imaginary_cm1: the transition state's imaginary frequency, cm⁻¹ (negative).
        temperature_K: temperature, K.
        reactant: the reactant's thermochemistry.
        ts: the transition state's thermochemistry (imaginary mode left out).
    """

    delta_e_eV: float
    delta_h_eV: float
    delta_g_eV: float
    imaginary_cm1: float
    temperature_K: float
    reactant: ThermoResult
    ts: ThermoResult

    @property
    def delta_e_kcal_per_mol(self) -> float:
        """ΔE‡, kcal/mol."""
        return self.delta_e_eV / EV_PER_KCAL_MOL

    @property
    def delta_h_kcal_per_mol(self) -> float:
        """ΔH‡, kcal/mol."""
        return self.delta_h_eV / EV_PER_KCAL_MOL

    @property
    def delta_g_kcal_per_mol(self) -> float:
        """ΔG‡, kcal/mol."""
        return self.delta_g_eV / EV_PER_KCAL_MOL

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the barriers in eV and kcal/mol, and both thermochemistries."""
        return {
            "delta_e_eV": self.delta_e_eV,
            "delta_h_eV": self.delta_h_eV,
            "delta_g_eV": self.delta_g_eV,
            "delta_e_kcal_per_mol": self.delta_e_kcal_per_mol,
            "delta_h_kcal_per_mol": self.delta_h_kcal_per_mol,
            "delta_g_kcal_per_mol": self.delta_g_kcal_per_mol,
            "imaginary_cm1": self.imaginary_cm1,
            "temperature_K": self.temperature_K,
            "reactant": self.reactant.to_dict(),
            "ts": self.ts.to_dict(),
        }


@dataclass(frozen=True)
class RateResult:
    """An Eyring rate constant (see :func:`rate`).

    Attributes:
        k_per_s: rate constant, s⁻¹.
        barrier: the free-energy barrier it comes from.
        temperature_K: temperature, K.
        transmission: transmission coefficient κ used.
    """

    k_per_s: float
    barrier: Barrier
    temperature_K: float
    transmission: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the rate, κ and the barrier's fields."""
        return {
            "k_per_s": self.k_per_s,
            "temperature_K": self.temperature_K,
            "transmission": self.transmission,
            **self.barrier.to_dict(),
        }


# ----------------------------------------------------------------------------- barriers and rates
def free_energy_barrier(
    reactant: Atoms | ThermoResult,
    ts: Atoms | ThermoResult,
    model: Any = None,
    *,
    temperature_K: float = 298.15,
    pressure_Pa: float = STANDARD_PRESSURE_PA,
    reactant_symmetry_number: int | None = None,
    ts_symmetry_number: int | None = None,
) -> Barrier:
    """ΔE‡, ΔH‡ and ΔG‡ from a reactant minimum to a transition state.

    Both structures hold the same atoms (a unimolecular step, or a reactant complex), so the
    translational terms and the pressure cancel in the differences.

    Args:
        reactant: the reactant (a minimum: no imaginary mode), as ``ase.Atoms`` evaluated with
            ``model``, or its :class:`ThermoResult`.
        ts: the transition state (exactly one imaginary mode), as ``ase.Atoms`` or its
            :class:`ThermoResult` (from ``thermo(..., allow_saddle=True)``).
        model: the :class:`~hip_head.model.HIPModel` for structures given as ``ase.Atoms``.
        temperature_K: temperature, K.
        pressure_Pa: pressure, Pa.
        reactant_symmetry_number: σ of the reactant (default 1; see :func:`thermo`).
        ts_symmetry_number: σ of the transition state (default 1).

    Returns:
        The :class:`Barrier` (eV; kcal/mol through its properties).

    Raises:
        ChemistryError: the reactant has an imaginary mode or the TS has none or several (the
            message names them), or the two hold different atoms.
    """
    check_conditions(temperature_K, pressure_Pa)
    _check_same_atoms(reactant, ts)
    r = thermo_of(
        reactant, model, "reactant", (0,), temperature_K, pressure_Pa, reactant_symmetry_number
    )
    t = thermo_of(
        ts, model, "transition state", (1,), temperature_K, pressure_Pa, ts_symmetry_number
    )
    return Barrier(
        delta_e_eV=t.energy_eV - r.energy_eV,
        delta_h_eV=t.enthalpy_eV - r.enthalpy_eV,
        delta_g_eV=t.gibbs_eV - r.gibbs_eV,
        imaginary_cm1=t.imaginary_cm1[0],
        temperature_K=float(temperature_K),
        reactant=r,
        ts=t,
    )


def _check_same_atoms(reactant: Atoms | ThermoResult, ts: Atoms | ThermoResult) -> None:
    if isinstance(reactant, Atoms) and isinstance(ts, Atoms):
        if sorted(reactant.numbers.tolist()) != sorted(ts.numbers.tolist()):
            raise ChemistryError(
                f"the reactant ({reactant.get_chemical_formula()}) and the transition state "
                f"({ts.get_chemical_formula()}) hold different atoms"
            )


def eyring_rate(delta_g_eV: float, temperature_K: float, transmission: float = 1.0) -> float:
    """Eyring–Polanyi rate constant ``k = κ k_B T / h · exp(−ΔG‡ / k_B T)``.

    Constants are ASE's (CODATA 2014): ``k_B = ase.units.kB`` (eV/K) and
    ``h = ase.units._hplanck / ase.units._e`` (eV s).

    Args:
        delta_g_eV: free-energy barrier ΔG‡, eV.
        temperature_K: temperature, K (> 0).
        transmission: transmission coefficient κ (> 0; 1 in plain transition-state theory).

    Returns:
        The rate constant, s⁻¹ (first order).

    Raises:
        ChemistryError: non-positive temperature or transmission, or non-finite ΔG‡.
    """
    check_temperature(temperature_K)
    if not (math.isfinite(transmission) and transmission > 0):
        raise ChemistryError(f"transmission must be positive, got {transmission}")
    if not math.isfinite(delta_g_eV):
        raise ChemistryError(f"the free-energy barrier must be finite, got {delta_g_eV}")
    kt = units.kB * temperature_K
    return transmission * kt / _H_EV_S * math.exp(-delta_g_eV / kt)


def rate(
    reactant: Atoms | ThermoResult,
    ts: Atoms | ThermoResult,
    model: Any = None,
    temperature_K: float = 298.15,
    *,
    pressure_Pa: float = STANDARD_PRESSURE_PA,
    transmission: float = 1.0,
    reactant_symmetry_number: int | None = None,
    ts_symmetry_number: int | None = None,
) -> RateResult:
    """Eyring rate constant of a reactant → transition state step.

    :func:`free_energy_barrier` then :func:`eyring_rate`; arguments as there.

    Returns:
        The :class:`RateResult` (k in s⁻¹ and the barrier).
    """
    barrier = free_energy_barrier(
        reactant,
        ts,
        model,
        temperature_K=temperature_K,
        pressure_Pa=pressure_Pa,
        reactant_symmetry_number=reactant_symmetry_number,
        ts_symmetry_number=ts_symmetry_number,
    )
    k = eyring_rate(barrier.delta_g_eV, temperature_K, transmission)
    return RateResult(
        k_per_s=k, barrier=barrier, temperature_K=float(temperature_K), transmission=transmission
    )
