"""The potential seam of the chemistry tools: energy, forces and Hessian from a HIP, any ASE
calculator with a Hessian function, or GFN2-xTB.

Every chemistry function takes its ``model`` through :func:`as_potential`: a
:class:`~hip_head.model.HIPModel`, a saved-model path or ``"pretrained"``, a
``(calculator, hessian_function)`` pair (any ASE calculator and a function
``atoms -> (3N, 3N)`` Hessian, eV/Å²), or any object with the two methods of
:class:`Potential`. :class:`XTBPotential` is GFN2-xTB (tblite) with a finite-difference Hessian,
the reference the HIP was trained on. :class:`MeteredPotential` counts calls and the time spent
in the potential.

Units (ASE's): Å, eV, eV/Å, eV/Å², s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from hip_head.chem._common import ChemistryError, copy_charge_spin, load_model

__all__ = [
    "CalculatorPotential",
    "Meter",
    "MeteredPotential",
    "ModelPotential",
    "Potential",
    "XTBPotential",
    "as_potential",
    "bare",
    "max_force",
    "metered",
]


# ---------------------------------------------------------------------------------- potentials
@runtime_checkable
class Potential(Protocol):
    """What the chemistry tools need from a potential energy surface.

    ``calculator()`` returns an ASE calculator giving energy (eV) and forces (N, 3) eV/Å;
    ``hessian(atoms)`` returns the Cartesian Hessian (3N, 3N) eV/Å², index ``3a + α``.
    """

    def calculator(self) -> Calculator: ...

    def hessian(self, atoms: Atoms) -> np.ndarray: ...


class ModelPotential:
    """A :class:`~hip_head.model.HIPModel` as a :class:`Potential` (its Hessian head, or its
    autograd Hessian when the model was built with ``hessian="autograd"``).

    Args:
        model: the HIP.
    """

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    def calculator(self) -> Calculator:
        """A :class:`~hip_head.calculator.HIPCalculator` (energy and forces only per call)."""
        from hip_head.calculator import HIPCalculator

        return HIPCalculator(self.model, compute_hessian=False)

    def hessian(self, atoms: Atoms) -> np.ndarray:
        """(3N, 3N) Hessian, eV/Å²."""
        return self.model.predict(atoms, compute_hessian=True)["hessian"]

    def __repr__(self) -> str:
        return f"ModelPotential({type(self.model).__name__}, hessian={self.model.hessian_method!r})"


class CalculatorPotential:
    """Any ASE calculator plus a Hessian function as a :class:`Potential`.

    Args:
        calc: the ASE calculator (energy eV, forces eV/Å); shared by every structure.
        hessian_function: ``atoms -> Hessian`` in eV/Å², (3N, 3N) or any layout with (3N)²
            entries.
    """

    def __init__(self, calc: Calculator, hessian_function: Callable[[Atoms], Any]) -> None:
        self.calc = calc
        self.hessian_function = hessian_function

    def calculator(self) -> Calculator:
        """The wrapped calculator."""
        return self.calc

    def hessian(self, atoms: Atoms) -> np.ndarray:
        """(3N, 3N) Hessian, eV/Å²."""
        return _as_hessian(self.hessian_function(atoms), len(atoms))

    def __repr__(self) -> str:
        return f"CalculatorPotential({type(self.calc).__name__})"


class XTBPotential:
    """GFN-xTB (tblite) as a :class:`Potential`: analytic energy and forces, and the Hessian by
    central differences of the forces (6N force calls, step ``step`` Å;
    :func:`hip_head.finetune.engines.xtb_hessian`).

    Args:
        method: ``"GFN2-xTB"`` (default; the level the shipped HIP was trained on),
            ``"GFN1-xTB"``.
        accuracy: tblite accuracy (0.01: low SCF noise in the forces).
        charge: total charge, e.
        spin: spin multiplicity 2S + 1.
        step: finite-difference step of the Hessian, Å.
    """

    def __init__(
        self,
        method: str = "GFN2-xTB",
        accuracy: float = 0.01,
        charge: int = 0,
        spin: int = 1,
        step: float = 1e-3,
    ) -> None:
        self.method, self.accuracy = method, accuracy
        self.charge, self.spin, self.step = int(charge), int(spin), step

    def calculator(self) -> Calculator:
        """A ``tblite.ase.TBLite`` calculator."""
        from hip_head.finetune.engines import xtb_calculator

        return xtb_calculator(self.method, self.charge, self.spin, self.accuracy)

    def hessian(self, atoms: Atoms) -> np.ndarray:
        """(3N, 3N) finite-difference Hessian, eV/Å²."""
        from hip_head.finetune.engines import xtb_hessian

        return xtb_hessian(
            atoms,
            method=self.method,
            accuracy=self.accuracy,
            step=self.step,
            charge=self.charge,
            spin=self.spin,
        )

    def __repr__(self) -> str:
        return f"XTBPotential({self.method!r})"


def _as_hessian(value: Any, n_atoms: int) -> np.ndarray:
    """``value`` as a finite (3N, 3N) float64 array, or a ChemistryError saying what is wrong."""
    h = np.asarray(value, dtype=np.float64)
    n3 = 3 * n_atoms
    if h.size != n3 * n3:
        raise ChemistryError(
            f"the Hessian function returned shape {h.shape} for {n_atoms} atoms; "
            f"expected ({n3}, {n3})"
        )
    h = h.reshape(n3, n3)
    if not np.all(np.isfinite(h)):
        raise ChemistryError("the potential returned a non-finite Hessian")
    return h


def as_potential(model: Any) -> Potential:
    """The :class:`Potential` behind a ``model`` argument.

    Args:
        model: a :class:`~hip_head.model.HIPModel`; a saved-model path or ``"pretrained"``; a
            ``(calculator, hessian_function)`` pair; or an object with ``calculator()`` and
            ``hessian(atoms)`` (returned as is; a :class:`MeteredPotential` is unwrapped).

    Raises:
        ChemistryError: ``model`` is none of these.
    """
    from hip_head.model import HIPModel

    if isinstance(model, MeteredPotential):
        return model.inner
    if isinstance(model, HIPModel):
        return ModelPotential(model)
    if isinstance(model, (str, Path)):
        return ModelPotential(load_model(model))
    if isinstance(model, (tuple, list)) and len(model) == 2 and callable(model[1]):
        return CalculatorPotential(model[0], model[1])
    if callable(getattr(model, "calculator", None)) and callable(getattr(model, "hessian", None)):
        return model
    raise ChemistryError(
        f"cannot use a {type(model).__name__} as the model: pass a HIPModel, a model file, "
        "'pretrained', a (calculator, hessian_function) pair or an object with calculator() "
        "and hessian(atoms)"
    )


@dataclass
class Meter:
    """Calls to the potential and the wall time spent in it.

    Attributes:
        calls: energy/force evaluations.
        seconds: their wall time, s.
        hessian_calls: Hessian evaluations.
        hessian_seconds: their wall time, s.
    """

    calls: int = 0
    seconds: float = 0.0
    hessian_calls: int = 0
    hessian_seconds: float = 0.0

    @property
    def total_calls(self) -> int:
        """Energy/force plus Hessian evaluations."""
        return self.calls + self.hessian_calls

    @property
    def total_seconds(self) -> float:
        """Time in the potential, s."""
        return self.seconds + self.hessian_seconds

    def copy(self) -> Meter:
        """A snapshot of the counts (to measure a part of a run with :meth:`since`)."""
        return replace(self)

    def since(self, start: Meter) -> Meter:
        """The calls and time added since ``start``, an earlier :meth:`copy` of this meter."""
        return Meter(
            calls=self.calls - start.calls,
            seconds=self.seconds - start.seconds,
            hessian_calls=self.hessian_calls - start.hessian_calls,
            hessian_seconds=self.hessian_seconds - start.hessian_seconds,
        )


class _MeteredCalculator(Calculator):
    """Energy and forces of an inner calculator, timed into a :class:`Meter`."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, inner: Calculator, meter: Meter) -> None:
        super().__init__()
        self.inner, self.meter = inner, meter

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        t0 = time.perf_counter()
        energy = float(self.inner.get_potential_energy(self.atoms))
        forces = np.array(self.inner.get_forces(self.atoms), dtype=np.float64)
        self.meter.seconds += time.perf_counter() - t0
        self.meter.calls += 1
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise ChemistryError("the potential returned a non-finite energy or forces")
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


class MeteredPotential:
    """A :class:`Potential` that counts its calls and times them (:attr:`meter`), and checks the
    Hessian's shape and values.

    Args:
        inner: the potential (anything :func:`as_potential` accepts).
        meter: the meter to add to (a fresh one by default).
    """

    def __init__(self, inner: Any, meter: Meter | None = None) -> None:
        self.inner = as_potential(inner)
        self.meter = meter if meter is not None else Meter()

    def calculator(self) -> Calculator:
        """The inner calculator, timed."""
        return _MeteredCalculator(self.inner.calculator(), self.meter)

    def hessian(self, atoms: Atoms) -> np.ndarray:
        """(3N, 3N) Hessian, eV/Å², timed."""
        t0 = time.perf_counter()
        try:
            h = self.inner.hessian(atoms)
        finally:
            self.meter.hessian_seconds += time.perf_counter() - t0
            self.meter.hessian_calls += 1
        return _as_hessian(h, len(atoms))

    def attach(self, atoms: Atoms) -> Atoms:
        """A calculator-free copy of ``atoms`` with this potential's (timed) calculator."""
        out = bare(atoms)
        out.calc = self.calculator()
        return out


def metered(model: Any) -> MeteredPotential:
    """``model`` itself when it is a :class:`MeteredPotential` (its meter keeps counting), else
    a new one around it (anything :func:`as_potential` accepts) with a fresh meter."""
    return model if isinstance(model, MeteredPotential) else MeteredPotential(model)


# ---------------------------------------------------------------------------------- helpers
def bare(atoms: Atoms) -> Atoms:
    """A calculator-free copy with numbers, positions, cell/pbc and the charge/spin info."""
    out = Atoms(
        numbers=atoms.get_atomic_numbers(),
        positions=atoms.get_positions(),
        cell=atoms.get_cell(),
        pbc=atoms.get_pbc(),
    )
    return copy_charge_spin(atoms, out)


def max_force(forces: np.ndarray) -> float:
    """Largest atomic force norm of forces (N, 3) eV/Å."""
    return float(np.linalg.norm(np.asarray(forces).reshape(-1, 3), axis=1).max())
