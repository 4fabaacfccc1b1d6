"""Ideal-gas thermochemistry, free-energy barriers and Eyring rates from a HIP's Hessian.

The harmonic frequencies are the Eckart-projected ones of :func:`hip_head.vibrations.
vibrational_analysis`; H, S and G come from ASE's :class:`ase.thermochemistry.IdealGasThermo`
(rigid rotor, harmonic oscillator, ideal gas). A transition state is treated as transition-state
theory does: its one imaginary mode (the reaction coordinate) is left out of the vibrational
partition function.

Units: energies eV (kcal/mol where the name says so), entropies eV/K, temperatures K, pressures
Pa, frequencies cm⁻¹ (imaginary ones as negative numbers), rates s⁻¹. Physical constants are
ASE's (:mod:`ase.units`, CODATA 2014): ``kB`` in eV/K and ``h = _hplanck / _e`` in eV s.

Symmetry numbers are not detected: the rotational symmetry number σ defaults to 1 (no
``−k_B ln σ`` entropy term) and is set with ``symmetry_number=``. Point-group detection (PySCF's
``detect_symm``, the one installed option) is not robust to the 1e-4–1e-3 Å deviations from
exact symmetry that optimised geometries carry, and a wrong σ is a silent error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms, units

from hip_head.chem._common import (
    ChemistryError,
    add_model_argument,
    model_from_argument,
    parse_command_args,
    read_structure,
    run_command,
)
from hip_head.vibrations import DEFAULT_IMAGINARY_THRESHOLD_CM1, vibrational_analysis

__all__ = [
    "EV_PER_KCAL_MOL",
    "STATIONARY_FORCE_TOL",
    "Barrier",
    "RateResult",
    "ThermoResult",
    "eyring_rate",
    "free_energy_barrier",
    "main_rate",
    "rate",
    "stationary_warning",
    "thermo",
]

#: One kcal/mol in eV (≈ 0.0433641).
EV_PER_KCAL_MOL: float = units.kcal / units.mol

#: Planck's constant, eV s (ASE's CODATA values).
_H_EV_S: float = units._hplanck / units._e

#: Above this max |force| (eV/Å) a structure is not a stationary point: the commands warn that
#: its frequencies and free energies are not meaningful.
STATIONARY_FORCE_TOL: float = 0.05

_STANDARD_PRESSURE_PA: float = 101325.0


@dataclass(frozen=True)
class ThermoResult:
    """Ideal-gas thermochemistry of one structure (see :func:`thermo`).

    Attributes:
        energy_eV: electronic (potential) energy, eV.
        zpe_eV: zero-point energy ½ Σ ħω over the real modes used, eV.
        enthalpy_eV: H(T) = E + ZPE + thermal translational, rotational and vibrational
            energy + k_B T, eV.
        entropy_eV_per_K: S(T, p), eV/K.
        gibbs_eV: G = H − T S, eV.
        frequencies_cm1: all M = 3N − 6 (3N − 5 linear, 0 for one atom) Eckart-projected
            frequencies, ascending, cm⁻¹, imaginary ones negative.
        imaginary_cm1: the imaginary frequencies (below −threshold), cm⁻¹, negative.
        vib_energies_eV: ħω of the modes that enter the partition function (the positive
            frequencies), eV.
        temperature_K: temperature, K.
        pressure_Pa: pressure, Pa.
        symmetry_number: rotational symmetry number σ used.
        geometry: ``"monatomic"``, ``"linear"`` or ``"nonlinear"``.
        spin: total electronic spin S (0 singlet, 0.5 doublet, 1 triplet).
        max_force_eV_per_A: max |force component|, eV/Å (None when no forces were given).
    """

    energy_eV: float
    zpe_eV: float
    enthalpy_eV: float
    entropy_eV_per_K: float
    gibbs_eV: float
    frequencies_cm1: tuple[float, ...]
    imaginary_cm1: tuple[float, ...]
    vib_energies_eV: tuple[float, ...]
    temperature_K: float
    pressure_Pa: float
    symmetry_number: int
    geometry: str
    spin: float
    max_force_eV_per_A: float | None = None

    @property
    def saddle_index(self) -> int:
        """Number of imaginary modes: 0 for a minimum, 1 for a transition state."""
        return len(self.imaginary_cm1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields (tuples as lists) plus ``saddle_index``."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        data["saddle_index"] = self.saddle_index
        return data


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


# ----------------------------------------------------------------------------- helpers
def _format_cm1(frequencies: Sequence[float]) -> str:
    """``"-1523.4, -80.2 cm^-1"`` (imaginary frequencies as negative numbers)."""
    return ", ".join(f"{f:.1f}" for f in frequencies) + " cm^-1"


def _check_conditions(temperature_K: float, pressure_Pa: float) -> None:
    if not (math.isfinite(temperature_K) and temperature_K > 0):
        raise ChemistryError(f"temperature must be positive (K), got {temperature_K}")
    if not (math.isfinite(pressure_Pa) and pressure_Pa > 0):
        raise ChemistryError(f"pressure must be positive (Pa), got {pressure_Pa}")


def _electron_count(atoms: Atoms) -> int:
    """Electrons of ``atoms``: Σ Z minus ``atoms.info["charge"]`` (default 0)."""
    charge = atoms.info.get("charge", 0)
    if float(charge) != int(charge):
        raise ChemistryError(f"atoms.info['charge'] must be an integer, got {charge!r}")
    return int(atoms.numbers.sum()) - int(charge)


def _resolve_spin(atoms: Atoms, spin: float | None) -> float:
    """Total electronic spin S (ASE's ``spin``) for ``atoms``.

    In order: ``spin`` if given; else half the total initial magnetic moment (unpaired
    electrons, μB) if non-zero; else ``atoms.info["spin"]`` read as the multiplicity 2S + 1
    (the convention of :mod:`hip_head.finetune.labels`); else 0 for an even electron count and
    0.5 for an odd one. The electron count is Σ Z − ``atoms.info["charge"]``.

    Raises:
        ChemistryError: S is negative, not a multiple of ½, or its parity does not match the
            electron count.
    """
    if spin is None:
        moment = float(np.sum(atoms.get_initial_magnetic_moments()))
        if abs(moment) > 1e-8:
            spin = round(abs(moment)) / 2
        elif "spin" in atoms.info:
            spin = (float(atoms.info["spin"]) - 1.0) / 2.0
        else:
            spin = 0.5 * (_electron_count(atoms) % 2)
    spin = float(spin)
    if spin < 0 or abs(2 * spin - round(2 * spin)) > 1e-8:
        raise ChemistryError(f"spin must be a non-negative multiple of 1/2 (S), got {spin}")
    if round(2 * spin) % 2 != _electron_count(atoms) % 2:
        raise ChemistryError(
            f"spin S = {spin} does not fit {_electron_count(atoms)} electrons (2S must have "
            "the parity of the electron count; set atoms.info['charge'] or pass spin=)"
        )
    return spin


def _resolve_symmetry_number(symmetry_number: int | None) -> int:
    if symmetry_number is None:
        return 1
    if int(symmetry_number) != symmetry_number or symmetry_number < 1:
        raise ChemistryError(f"symmetry_number must be a positive integer, got {symmetry_number}")
    return int(symmetry_number)


def _geometry(atoms: Atoms, is_linear: bool) -> str:
    if len(atoms) == 1:
        return "monatomic"
    return "linear" if is_linear else "nonlinear"


def _evaluate(
    atoms: Atoms, model: Any, hessian: Any, energy: float | None
) -> tuple[float, np.ndarray, float | None]:
    """(energy eV, Hessian (3N, 3N) eV/Å², max |force| eV/Å or None) from a model or arrays."""
    if (model is None) == (hessian is None):
        raise ChemistryError("pass either model= (a HIPModel) or hessian= with energy=")
    if model is not None:
        out = model.predict(atoms)
        max_force = float(np.abs(out["forces"]).max()) if len(atoms) else 0.0
        return float(out["energy"]), np.asarray(out["hessian"], dtype=np.float64), max_force
    if energy is None:
        raise ChemistryError("hessian= needs energy= (the electronic energy, eV)")
    n3 = 3 * len(atoms)
    h = np.asarray(hessian, dtype=np.float64)
    if h.size != n3 * n3:
        raise ChemistryError(
            f"hessian of shape {h.shape} does not fit {len(atoms)} atoms: expected ({n3}, {n3})"
        )
    return float(energy), h.reshape(n3, n3), None


_EXPECTED = {
    (0,): "a minimum (no imaginary mode)",
    (1,): "exactly one imaginary mode (a transition state)",
    (0, 1): "at most one imaginary mode",
}


def _check_saddle_index(
    imaginary: Sequence[float],
    allowed: tuple[int, ...],
    what: str,
    lowest_cm1: float | None,
    hint: str = "",
) -> None:
    """Raise ChemistryError naming the imaginary modes when their count is not allowed."""
    index = len(imaginary)
    if index in allowed:
        return
    if index == 0:
        lowest = "" if lowest_cm1 is None else f" (lowest frequency {lowest_cm1:.1f} cm^-1)"
        raise ChemistryError(
            f"{what} has no imaginary mode{lowest}: a transition state needs exactly one; "
            "optimise it to a first-order saddle point"
        )
    raise ChemistryError(
        f"{what} has saddle index {index}, imaginary modes {_format_cm1(imaginary)}; "
        f"expected {_EXPECTED[allowed]}" + (f" ({hint})" if hint else "")
    )


# ----------------------------------------------------------------------------- thermochemistry
def thermo(
    atoms: Atoms,
    model: Any = None,
    *,
    hessian: Any = None,
    energy: float | None = None,
    temperature_K: float = 298.15,
    pressure_Pa: float = _STANDARD_PRESSURE_PA,
    symmetry_number: int | None = None,
    spin: float | None = None,
    allow_saddle: bool = False,
    threshold_cm1: float = DEFAULT_IMAGINARY_THRESHOLD_CM1,
) -> ThermoResult:
    """Ideal-gas enthalpy, entropy and Gibbs energy of one structure from its Hessian.

    The Eckart-projected frequencies of the Hessian (:func:`~hip_head.vibrations.
    vibrational_analysis`) give the vibrational energies ħω of the modes with positive
    frequency; they, the electronic energy, the moments of inertia of ``atoms``, σ and S go to
    :class:`ase.thermochemistry.IdealGasThermo`. Modes with negative frequency are left out of
    the partition function: the imaginary mode of a transition state (``allow_saddle=True``),
    as transition-state theory does, and any noise-level negative frequency above
    ``-threshold_cm1``.

    Args:
        atoms: the structure, N atoms (positions Å); a minimum or, with ``allow_saddle``, a
            first-order saddle point of the model's energy.
        model: a :class:`~hip_head.model.HIPModel`; its energy and Hessian at ``atoms`` are
            used. Give either ``model`` or ``hessian``.
        hessian: (3N, 3N) Cartesian Hessian, eV/Å² (instead of ``model``; needs ``energy``).
        energy: the electronic energy, eV (with ``hessian``).
        temperature_K: temperature, K.
        pressure_Pa: pressure, Pa (101325 Pa = 1 atm by default).
        symmetry_number: rotational symmetry number σ (e.g. 2 for H2O, 12 for CH4). Not
            detected: the default is 1; pass σ for symmetric molecules (S changes by
            −k_B ln σ).
        spin: total electronic spin S (0, 0.5, 1, ...). Default: from the atoms' total initial
            magnetic moment (unpaired electrons) if non-zero, else ``atoms.info["spin"]`` read
            as the multiplicity 2S + 1, else 0 for an even and 0.5 for an odd electron count
            (Σ Z − ``atoms.info["charge"]``).
        allow_saddle: accept a first-order saddle point (one imaginary mode), whose imaginary
            mode is then dropped.
        threshold_cm1: frequencies below ``-threshold_cm1`` count as imaginary, cm⁻¹.

    Returns:
        The :class:`ThermoResult`.

    Raises:
        ChemistryError: neither or both of ``model`` and ``hessian`` given; the structure's
            saddle index is not 0 (not 0 or 1 with ``allow_saddle``), with the imaginary
            frequencies in the message; bad temperature, pressure, σ or spin.
    """
    return _thermo(
        atoms,
        model,
        hessian,
        energy,
        temperature_K,
        pressure_Pa,
        symmetry_number,
        spin,
        allowed=(0, 1) if allow_saddle else (0,),
        what="the structure",
        hint="" if allow_saddle else "pass allow_saddle=True for a transition state",
        threshold_cm1=threshold_cm1,
    )


def _thermo(
    atoms: Atoms,
    model: Any,
    hessian: Any,
    energy: float | None,
    temperature_K: float,
    pressure_Pa: float,
    symmetry_number: int | None,
    spin: float | None,
    *,
    allowed: tuple[int, ...],
    what: str,
    hint: str = "",
    threshold_cm1: float = DEFAULT_IMAGINARY_THRESHOLD_CM1,
) -> ThermoResult:
    """:func:`thermo`, accepting the saddle indices in ``allowed`` (``what`` names the
    structure in errors)."""
    from ase.thermochemistry import IdealGasThermo

    _check_conditions(temperature_K, pressure_Pa)
    sigma = _resolve_symmetry_number(symmetry_number)
    spin = _resolve_spin(atoms, spin)
    e_elec, h, max_force = _evaluate(atoms, model, hessian, energy)
    vib = vibrational_analysis(h, atoms, threshold_cm1=threshold_cm1)
    freqs = vib.frequencies_cm1
    imaginary = tuple(float(f) for f in freqs[freqs < -threshold_cm1])
    lowest = float(freqs[0]) if freqs.size else None
    _check_saddle_index(imaginary, allowed, what, lowest, hint)
    vib_energies = tuple(float(e) for e in vib.energies[freqs > 0])
    geometry = _geometry(atoms, vib.is_linear)
    gas = IdealGasThermo(
        vib_energies=list(vib_energies),
        geometry=geometry,
        potentialenergy=e_elec,
        atoms=atoms,
        symmetrynumber=sigma,
        spin=spin,
        vib_selection="all",
    )
    enthalpy = float(gas.get_enthalpy(temperature_K, verbose=False))
    entropy = float(gas.get_entropy(temperature_K, pressure_Pa, verbose=False))
    return ThermoResult(
        energy_eV=e_elec,
        zpe_eV=float(gas.get_ZPE_correction()),
        enthalpy_eV=enthalpy,
        entropy_eV_per_K=entropy,
        gibbs_eV=enthalpy - temperature_K * entropy,
        frequencies_cm1=tuple(float(f) for f in freqs),
        imaginary_cm1=imaginary,
        vib_energies_eV=vib_energies,
        temperature_K=float(temperature_K),
        pressure_Pa=float(pressure_Pa),
        symmetry_number=sigma,
        geometry=geometry,
        spin=spin,
        max_force_eV_per_A=max_force,
    )


def _thermo_of(
    structure: Atoms | ThermoResult,
    model: Any,
    role: str,
    allowed: tuple[int, ...],
    temperature_K: float,
    pressure_Pa: float,
    symmetry_number: int | None,
) -> ThermoResult:
    """Thermochemistry of a reactant or TS, checking its saddle index against ``allowed``."""
    if not isinstance(structure, ThermoResult):
        if model is None:
            raise ChemistryError(f"pass model= to evaluate the {role} (or a ThermoResult)")
        return _thermo(
            structure,
            model,
            None,
            None,
            temperature_K,
            pressure_Pa,
            symmetry_number,
            None,
            allowed=allowed,
            what=f"the {role}",
        )
    if not (
        math.isclose(structure.temperature_K, temperature_K)
        and math.isclose(structure.pressure_Pa, pressure_Pa)
    ):
        raise ChemistryError(
            f"the {role}'s thermochemistry is at {structure.temperature_K} K, "
            f"{structure.pressure_Pa} Pa, not {temperature_K} K, {pressure_Pa} Pa"
        )
    lowest = structure.frequencies_cm1[0] if structure.frequencies_cm1 else None
    _check_saddle_index(structure.imaginary_cm1, allowed, f"the {role}", lowest)
    return structure


def free_energy_barrier(
    reactant: Atoms | ThermoResult,
    ts: Atoms | ThermoResult,
    model: Any = None,
    *,
    temperature_K: float = 298.15,
    pressure_Pa: float = _STANDARD_PRESSURE_PA,
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
    _check_conditions(temperature_K, pressure_Pa)
    _check_same_atoms(reactant, ts)
    r = _thermo_of(
        reactant, model, "reactant", (0,), temperature_K, pressure_Pa, reactant_symmetry_number
    )
    t = _thermo_of(
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
    if not (math.isfinite(temperature_K) and temperature_K > 0):
        raise ChemistryError(f"temperature must be positive (K), got {temperature_K}")
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
    pressure_Pa: float = _STANDARD_PRESSURE_PA,
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


# ----------------------------------------------------------------------------- command line
def stationary_warning(prog: str, role: str, max_force: float | None) -> None:
    """Warn on stderr when ``max_force`` (eV/Å) shows a structure is not stationary."""
    if max_force is not None and max_force > STATIONARY_FORCE_TOL:
        print(
            f"{prog}: warning: the {role} has max |force| {max_force:.3f} eV/Å "
            f"(> {STATIONARY_FORCE_TOL}): not a stationary point of the model, so its harmonic "
            "frequencies are not meaningful; optimise it first",
            file=sys.stderr,
        )


def _rate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hip rate",
        description="Free-energy barrier and Eyring rate constant of a reactant minimum and a "
        "transition state (ideal gas, harmonic; both optimised with the same model).",
    )
    parser.add_argument("reactant", help="reactant structure (a minimum; any ASE format)")
    parser.add_argument("ts", help="transition-state structure (one imaginary mode)")
    parser.add_argument(
        "--T",
        "--temperature",
        dest="temperature",
        type=float,
        default=298.15,
        help="temperature, K (default 298.15)",
    )
    parser.add_argument(
        "--p",
        "--pressure",
        dest="pressure",
        type=float,
        default=_STANDARD_PRESSURE_PA,
        help="pressure, Pa (default 101325)",
    )
    parser.add_argument(
        "--transmission", type=float, default=1.0, help="transmission coefficient κ (default 1)"
    )
    parser.add_argument(
        "--symmetry-reactant",
        type=int,
        default=None,
        help="rotational symmetry number of the reactant (default 1)",
    )
    parser.add_argument(
        "--symmetry-ts",
        type=int,
        default=None,
        help="rotational symmetry number of the transition state (default 1)",
    )
    add_model_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _print_rate(result: RateResult) -> None:
    b = result.barrier
    print(
        f"T = {result.temperature_K:.2f} K, p = {b.reactant.pressure_Pa:.0f} Pa, "
        f"κ = {result.transmission:g}"
    )
    for label, kcal, ev in (
        ("ΔE‡ (electronic)", b.delta_e_kcal_per_mol, b.delta_e_eV),
        ("ΔH‡", b.delta_h_kcal_per_mol, b.delta_h_eV),
        ("ΔG‡", b.delta_g_kcal_per_mol, b.delta_g_eV),
    ):
        print(f"{label:<17} {kcal:10.2f} kcal/mol {ev:10.4f} eV")
    print(f"{'imaginary freq.':<17} {b.imaginary_cm1:10.1f} cm^-1")
    print(f"{'k(T)':<17} {result.k_per_s:10.3e} s^-1")


def main_rate(argv: Sequence[str] | None = None) -> int:
    """The ``hip rate REACTANT TS [--T K] [--p PA] [--model M] [--json]`` command.

    Prints ΔE‡, ΔH‡, ΔG‡ (kcal/mol and eV), the TS's imaginary frequency and k(T) (s⁻¹), or
    all of it with both thermochemistries as JSON.

    Returns:
        0 on success, 2 on an error (one line on stderr).
    """
    args = parse_command_args(_rate_parser(), argv)
    if isinstance(args, int):
        return args

    def body() -> int:
        reactant, ts = read_structure(args.reactant), read_structure(args.ts)
        result = rate(
            reactant,
            ts,
            model_from_argument(args),
            args.temperature,
            pressure_Pa=args.pressure,
            transmission=args.transmission,
            reactant_symmetry_number=args.symmetry_reactant,
            ts_symmetry_number=args.symmetry_ts,
        )
        stationary_warning("hip rate", "reactant", result.barrier.reactant.max_force_eV_per_A)
        stationary_warning("hip rate", "transition state", result.barrier.ts.max_force_eV_per_A)
        if args.json:
            print(json.dumps(result.to_dict(), indent=1))
        else:
            _print_rate(result)
        return 0

    return run_command("hip rate", body)
