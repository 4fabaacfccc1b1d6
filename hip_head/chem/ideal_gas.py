"""Ideal-gas thermochemistry of one structure from a HIP's Hessian.

The harmonic frequencies are the Eckart-projected ones of :func:`hip_head.vibrations.
vibrational_analysis`; H, S and G come from ASE's :class:`ase.thermochemistry.IdealGasThermo`
(rigid rotor, harmonic oscillator, ideal gas). A transition state is treated as transition-state
theory does: its one imaginary mode (the reaction coordinate) is left out of the vibrational
partition function. Barriers and rates built on this: :mod:`hip_head.chem.thermo`.

Units: energies eV, entropies eV/K, temperatures K, pressures Pa, frequencies cm⁻¹ (imaginary
ones as negative numbers). Physical constants are ASE's (:mod:`ase.units`, CODATA 2014).

Symmetry numbers are not detected: the rotational symmetry number σ defaults to 1 (no
``−k_B ln σ`` entropy term) and is set with ``symmetry_number=``. Point-group detection (PySCF's
``detect_symm``, the one installed option) is not robust to the 1e-4–1e-3 Å deviations from
exact symmetry that optimised geometries carry, and a wrong σ is a silent error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.chem._common import ChemistryError
from hip_head.vibrations import DEFAULT_IMAGINARY_THRESHOLD_CM1, vibrational_analysis

__all__ = ["STANDARD_PRESSURE_PA", "ThermoResult", "thermo", "thermo_of"]

#: The default pressure, Pa (1 atm).
STANDARD_PRESSURE_PA: float = 101325.0


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


# ----------------------------------------------------------------------------- inputs
def _format_cm1(frequencies: Sequence[float]) -> str:
    """``"-1523.4, -80.2 cm^-1"`` (imaginary frequencies as negative numbers)."""
    return ", ".join(f"{f:.1f}" for f in frequencies) + " cm^-1"


def check_temperature(temperature_K: float) -> None:
    """Raise ChemistryError unless ``temperature_K`` (K) is finite and positive."""
    if not (math.isfinite(temperature_K) and temperature_K > 0):
        raise ChemistryError(f"temperature must be positive (K), got {temperature_K}")


def check_conditions(temperature_K: float, pressure_Pa: float) -> None:
    """Raise ChemistryError unless temperature (K) and pressure (Pa) are finite and positive."""
    check_temperature(temperature_K)
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
    (the convention of :mod:`hip_head.finetune.engines`); else 0 for an even electron count and
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


def check_saddle_index(
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
    pressure_Pa: float = STANDARD_PRESSURE_PA,
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

    check_conditions(temperature_K, pressure_Pa)
    sigma = _resolve_symmetry_number(symmetry_number)
    spin = _resolve_spin(atoms, spin)
    e_elec, h, max_force = _evaluate(atoms, model, hessian, energy)
    vib = vibrational_analysis(h, atoms, threshold_cm1=threshold_cm1)
    freqs = vib.frequencies_cm1
    imaginary = tuple(float(f) for f in freqs[freqs < -threshold_cm1])
    lowest = float(freqs[0]) if freqs.size else None
    check_saddle_index(imaginary, allowed, what, lowest, hint)
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


def thermo_of(
    structure: Atoms | ThermoResult,
    model: Any,
    role: str,
    allowed: tuple[int, ...],
    temperature_K: float,
    pressure_Pa: float,
    symmetry_number: int | None,
) -> ThermoResult:
    """Thermochemistry of one end of a step (the reactant or the TS), checked for its role.

    Args:
        structure: the structure (evaluated with ``model``) or its :class:`ThermoResult`
            (checked to be at ``temperature_K`` and ``pressure_Pa``).
        model: the :class:`~hip_head.model.HIPModel` for a structure given as ``ase.Atoms``.
        role: what the structure is, for errors (``"reactant"``, ``"transition state"``).
        allowed: the accepted saddle indices (``(0,)`` for a minimum, ``(1,)`` for a TS).
        temperature_K: temperature, K.
        pressure_Pa: pressure, Pa.
        symmetry_number: rotational symmetry number σ (default 1).

    Raises:
        ChemistryError: no model for an ``ase.Atoms``, other conditions, or a saddle index not
            in ``allowed`` (the message names the imaginary modes).
    """
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
    check_saddle_index(structure.imaginary_cm1, allowed, f"the {role}", lowest)
    return structure
