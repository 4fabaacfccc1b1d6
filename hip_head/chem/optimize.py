"""Geometry optimisation with a HIP (or any potential).

:func:`optimize` relaxes a structure to a minimum with one of four methods:

* ``"newton"``: Sella ``order=0`` in internal coordinates with the potential's Hessian as
  ``hessian_function``, recomputed every ``hessian_every`` steps (quasi-Newton updates in
  between): a trust-region Newton–Raphson minimiser. With the HIP head a Hessian costs about one
  force call, so this usually takes the fewest steps.
* ``"sella"``: Sella ``order=0`` with its own Hessian approximations (no ``hessian_function``).
* ``"bfgs"`` / ``"fire"``: ASE's BFGS and FIRE in Cartesian coordinates.

``model`` is anything :func:`hip_head.chem.potentials.as_potential` accepts (a HIP, a model
file or ``"pretrained"``, a ``(calculator, hessian_function)`` pair, a ``Potential``).

The ``hip opt`` command: :mod:`hip_head.chem.search_commands`.

Units (ASE's): Å, eV, eV/Å, eV/Å², cm⁻¹ (imaginary frequencies as negative numbers), s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.chem._common import ChemistryError
from hip_head.chem.potentials import MeteredPotential, bare, max_force, metered
from hip_head.errors import HIPError
from hip_head.vibrations import vibrational_analysis

__all__ = [
    "OPT_METHODS",
    "OptResult",
    "optimize",
    "run_optimizer",
]

#: Methods of :func:`optimize`.
OPT_METHODS = ("newton", "sella", "bfgs", "fire")

#: ``callback(step, energy_eV, fmax_eV_per_A)``, called after every optimiser step.
Callback = Callable[[int, float, float], None]


def _frequencies(potential: MeteredPotential, atoms: Atoms) -> tuple[int, np.ndarray]:
    """(saddle index, Eckart frequencies cm⁻¹) of ``atoms`` from the potential's Hessian."""
    vib = vibrational_analysis(potential.hessian(atoms), atoms)
    return vib.n_imaginary, vib.frequencies_cm1


# ---------------------------------------------------------------------------------- optimise
@dataclass
class OptResult:
    """Result of :func:`optimize`.

    Attributes:
        atoms: the final geometry (calculator-free; ``info["energy"]`` eV, ``info["fmax"]``).
        converged: the largest force fell below ``fmax``.
        steps: optimiser steps taken.
        energy_eV: final energy, eV.
        fmax: final largest atomic force, eV/Å.
        wall_s: wall time of the whole call, s.
        model_seconds: time spent in the potential (energies, forces, Hessians), s.
        model_calls: energy/force evaluations.
        hessian_calls: Hessian evaluations (the final saddle-index check included).
        saddle_index: imaginary modes of the final geometry (0: a minimum); None when not checked.
        frequencies_cm1: the final geometry's Eckart frequencies, cm⁻¹ (imaginary negative), or
            None when not checked.
        method: the method used.
        reason: why it stopped when not converged ("" when converged).
        path_positions: (K, N, 3) Å, the geometry after every step (the start first).
        path_energies: (K,) eV along the path.
    """

    atoms: Atoms
    converged: bool
    steps: int
    energy_eV: float
    fmax: float
    wall_s: float
    model_seconds: float
    model_calls: int
    hessian_calls: int
    saddle_index: int | None
    frequencies_cm1: np.ndarray | None
    method: str
    reason: str = ""
    path_positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3)), repr=False)
    path_energies: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no geometry)."""
        return {
            "method": self.method,
            "converged": self.converged,
            "steps": self.steps,
            "energy_eV": self.energy_eV,
            "fmax_eV_per_A": self.fmax,
            "saddle_index": self.saddle_index,
            "frequencies_cm1": None
            if self.frequencies_cm1 is None
            else [round(float(f), 2) for f in self.frequencies_cm1],
            "wall_s": self.wall_s,
            "model_seconds": self.model_seconds,
            "model_calls": self.model_calls,
            "hessian_calls": self.hessian_calls,
            "reason": self.reason,
        }


def _make_optimizer(
    work: Atoms, method: str, potential: MeteredPotential, hessian_every: int, internal: bool
) -> Any:
    if method in ("newton", "sella"):
        from sella import Sella

        kwargs: dict[str, Any] = {}
        if method == "newton":
            kwargs = dict(
                hessian_function=potential.hessian,
                eig=True,
                # Sella re-evaluates when steps since the last Hessian >= diag_every_n
                diag_every_n=max(int(hessian_every) - 1, 0),
            )
        return Sella(work, order=0, internal=internal, logfile=None, trajectory=None, **kwargs)
    from ase.optimize import BFGS, FIRE

    cls = {"bfgs": BFGS, "fire": FIRE}[method]
    return cls(work, logfile=None)


def run_optimizer(
    opt: Any,
    work: Atoms,
    fmax: float,
    max_steps: int,
    time_limit_s: float | None,
    callback: Callback | None = None,
    t0: float | None = None,
) -> tuple[bool, int, str, list[np.ndarray], list[float]]:
    """Step an ASE-style optimiser with step and wall-time limits.

    Args:
        opt: the optimiser (``irun(fmax=, steps=)`` generator).
        work: its atoms (with calculator).
        fmax: convergence threshold on the largest force, eV/Å.
        max_steps: step limit.
        time_limit_s: wall-time limit from ``t0`` (None: none), s.
        callback: ``callback(step, energy_eV, fmax)`` after each step.
        t0: start time (``time.perf_counter()``; default now).

    Returns:
        ``(converged, steps, reason, positions per step (N, 3) Å, energies per step eV)``;
        ``reason`` says why it stopped when not converged. Exceptions of the optimiser or the
        potential propagate.
    """
    t0 = time.perf_counter() if t0 is None else t0
    positions: list[np.ndarray] = []
    energies: list[float] = []
    converged = False
    reason = ""
    steps = 0
    for converged in opt.irun(fmax=fmax, steps=max_steps):  # noqa: B007
        steps = int(getattr(opt, "nsteps", len(positions)))
        energy = float(work.get_potential_energy())
        positions.append(work.get_positions().copy())
        energies.append(energy)
        if callback is not None and positions:
            callback(steps, energy, max_force(work.get_forces()))
        if converged:
            break
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            reason = f"time limit {time_limit_s:g} s reached after {steps} steps"
            break
    if not converged and not reason:
        reason = f"step limit {max_steps} reached"
    return bool(converged), steps, reason, positions, energies


def optimize(
    atoms: Atoms,
    model: Any,
    method: str = "newton",
    fmax: float = 0.01,
    max_steps: int = 500,
    *,
    hessian_every: int = 1,
    internal: bool = True,
    time_limit_s: float | None = 600.0,
    check_saddle: bool = True,
    callback: Callback | None = None,
) -> OptResult:
    """Relax ``atoms`` to a minimum of the potential.

    Methods: ``"newton"`` is Sella ``order=0`` (internal coordinates by default) with the model's
    Hessian as ``hessian_function``, recomputed every ``hessian_every`` steps and updated by
    quasi-Newton formulas in between; ``"sella"`` is Sella ``order=0`` with its own Hessian
    approximations; ``"bfgs"`` and ``"fire"`` are ASE's optimisers (Cartesian).

    Converged means the largest Cartesian atomic force is below ``fmax``. Sella tests the forces
    projected on its own coordinates, which for a near-linear molecule can miss a bending force;
    when Sella stops with the Cartesian force still above ``fmax``, BFGS (0.05 Å steps)
    finishes, within the same step limit (counted in ``steps``).

    Args:
        atoms: the start (N atoms, Å); not modified.
        model: the potential: a HIPModel, a model file or ``"pretrained"``, a
            ``(calculator, hessian_function)`` pair, or a
            :class:`~hip_head.chem.potentials.Potential`.
        method: one of :data:`OPT_METHODS`.
        fmax: convergence threshold on the largest atomic force, eV/Å.
        max_steps: optimiser step limit.
        hessian_every: ``"newton"`` only: steps between Hessian evaluations (1: every step).
        internal: Sella methods only: internal (True) or Cartesian coordinates.
        time_limit_s: wall-time limit, s (None: none).
        check_saddle: compute the final geometry's Hessian and report its saddle index.
        callback: ``callback(step, energy_eV, fmax)`` after every step.

    Returns:
        The :class:`OptResult`. Not converging is not an error: ``converged`` is False and
        ``reason`` says why (step limit, time limit, optimiser failure).

    Raises:
        ChemistryError: unknown method or bad arguments.
        HIPError: the model cannot evaluate the structure (e.g. an element it does not know).
    """
    method = method.lower()
    if method not in OPT_METHODS:
        raise ChemistryError(f"unknown optimisation method {method!r}: use one of {OPT_METHODS}")
    if hessian_every < 1:
        raise ChemistryError(f"hessian_every must be >= 1, got {hessian_every}")
    t0 = time.perf_counter()
    potential = metered(model)
    meter0 = potential.meter.copy()
    work = potential.attach(atoms)
    energy0 = float(work.get_potential_energy())  # bad input raises here, before any optimiser
    positions, energies = [work.get_positions().copy()], [energy0]
    try:
        opt = _make_optimizer(work, method, potential, hessian_every, internal)
        converged, steps, reason, pos, ens = run_optimizer(
            opt, work, fmax, max_steps, time_limit_s, callback, t0
        )
        positions += pos[1:]
        energies += ens[1:]
        if converged and max_force(work.get_forces()) >= fmax and steps < max_steps:
            # Sella tests the forces projected on its coordinates; near-linear molecules can
            # keep a Cartesian bending force above fmax: BFGS finishes
            from ase.optimize import BFGS

            offset = steps

            def shifted(step: int, energy: float, f: float) -> None:
                if callback is not None and step > 0:
                    callback(offset + step, energy, f)

            polish = BFGS(work, logfile=None, maxstep=0.05)
            converged, more, reason, pos, ens = run_optimizer(
                polish, work, fmax, max_steps - steps, time_limit_s, shifted, t0
            )
            steps += more
            positions += pos[1:]
            energies += ens[1:]
    except HIPError:
        raise
    except Exception as exc:  # noqa: BLE001 - Sella linear algebra, SCF failures
        converged, steps = False, max(len(positions) - 1, 0)
        reason = f"{method} failed: {type(exc).__name__}: {exc}"[:300]
    energy = float(work.get_potential_energy())
    f_max = max_force(work.get_forces())
    converged = f_max < fmax
    if not converged and not reason:
        reason = f"the optimiser stopped with largest force {f_max:.4f} eV/Å"
    out = bare(work)
    out.info.update(energy=energy, fmax=f_max, converged=converged)
    index, freqs = None, None
    if check_saddle:
        index, freqs = _frequencies(potential, out)
    used = potential.meter.since(meter0)
    return OptResult(
        atoms=out,
        converged=bool(converged),
        steps=int(steps),
        energy_eV=energy,
        fmax=f_max,
        wall_s=time.perf_counter() - t0,
        model_seconds=used.total_seconds,
        model_calls=used.calls,
        hessian_calls=used.hessian_calls,
        saddle_index=index,
        frequencies_cm1=freqs,
        method=method,
        reason="" if converged else reason,
        path_positions=np.asarray(positions),
        path_energies=np.asarray(energies),
    )
