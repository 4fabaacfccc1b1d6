"""Transition-state search with a HIP: a path, a saddle climb with the model's Hessian, checks.

:func:`find_ts`:

1. **Start.** From a reactant and a product (same atoms, same order), a path of ``n_images``
   geometries (:func:`hip_head.chem.paths.interpolate`, geodesic by default) and its
   highest-energy interior image by the model; or a TS guess given directly.
2. **Climb.** Sella ``order=1`` (internal coordinates) with the model's Hessian as
   ``hessian_function``: recomputed every ``hessian_every`` steps, quasi-Newton (TS-BFGS) updates
   in between (Sella's ``diag_every_n``), or with ``hessian_every=None`` at the start and only
   when the updated Hessian loses the saddle's negative curvature (Sella's own schedule, at
   most every third step); ``hessian="none"`` leaves Sella to its own iterative
   estimates from force differences, and a callable ``atoms -> (3N, 3N)`` replaces the model's.
   Step and wall-time limits: the search never hangs.
3. **Verify.** Exactly one imaginary Eckart mode of the model's Hessian at the saddle
   (:func:`hip_head.vibrations.vibrational_analysis`), then an IRC (:func:`hip_head.chem.irc.irc`)
   whose two relaxed ends must have the bond graphs of the given reactant and product, in either
   order (:func:`hip_head.finetune.molgraph.bond_graph`).

The outcome is a :class:`TSResult` whose ``verdict`` says what was found (see
:data:`VERDICTS`); a search that fails is a result, not an exception.

The potential is anything :func:`hip_head.chem.potentials.as_potential` accepts: a HIPModel, a
model file or ``"pretrained"``, a ``(calculator, hessian_function)`` pair, or an object with
``calculator()`` and ``hessian(atoms)`` (e.g. :class:`~hip_head.chem.potentials.XTBPotential`,
GFN2-xTB with a finite-difference Hessian, as a reference). The ``hip ts`` command and the
files it writes: :mod:`hip_head.chem.search_commands`, :mod:`hip_head.chem.outputs`.

Units: Å, eV, eV/Å, eV/Å², cm⁻¹ (imaginary frequencies as negative numbers), s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.chem._common import ChemistryError, copy_charge_spin
from hip_head.chem.irc import IRCResult, irc
from hip_head.chem.optimize import run_optimizer
from hip_head.chem.paths import INTERPOLATION_METHODS, check_same_atoms, interpolate
from hip_head.chem.potentials import (
    CalculatorPotential,
    Meter,
    MeteredPotential,
    ModelPotential,
    Potential,
    XTBPotential,
    as_potential,
    bare,
    max_force,
)
from hip_head.errors import HIPError, InvalidStructureError
from hip_head.vibrations import vibrational_analysis

__all__ = [
    "VERDICTS",
    "CalculatorPotential",
    "ModelPotential",
    "Potential",
    "TSResult",
    "XTBPotential",
    "connects",
    "find_ts",
]

#: What :attr:`TSResult.verdict` can say. ``"wrong saddle index n"`` carries the count.
VERDICTS = (
    "ts",  # converged; one imaginary mode; the IRC reaches the given ends (or: no ends given)
    "unverified",  # converged, verify=False: saddle index and IRC not checked
    "not converged",  # Sella stopped (step or time limit) above fmax
    "wrong saddle index n",  # converged to a stationary point with n != 1 imaginary modes
    "irc does not connect",  # a first-order saddle, but its IRC ends are not the given ends
    "irc failed",  # the IRC itself failed
    "failed",  # the optimiser or the potential failed during the climb
)

#: ``callback(step, energy_eV, fmax_eV_per_A)`` after every Sella step.
Callback = Callable[[int, float, float], None]


@dataclass
class TSResult:
    """Result of :func:`find_ts`.

    Attributes:
        atoms: the final geometry of the climb (calculator-free; ``info["energy"]`` eV).
        energy_eV: its energy, eV.
        imaginary_cm1: its lowest frequency when imaginary (negative number), cm⁻¹; None when
            it has no imaginary mode or was not checked.
        frequencies_cm1: its Eckart frequencies (ascending, cm⁻¹), or None when not checked.
        saddle_index: its number of imaginary modes, or None when not checked.
        converged: Sella reached ``fmax``.
        steps: Sella steps taken.
        fmax_eV_per_A: largest atomic force at the last geometry, eV/Å.
        wall_s: wall time of the whole search (path, climb, checks, IRC), s.
        model_calls: energy/force evaluations (IRC included).
        model_seconds: time spent in the potential, s (IRC included).
        hessian_calls: Hessian evaluations (IRC included).
        irc: the IRC, or None when not run.
        verdict: one of :data:`VERDICTS` (``"wrong saddle index 2"`` etc.).
        reason: a sentence saying why, with numbers.
        start: the geometry the climb started from.
        start_label: ``"guess"`` or ``"path image k of n"``.
        path: the interpolated path (calculator-free, ``info["energy"]`` eV), empty for a guess.
    """

    atoms: Atoms
    energy_eV: float
    imaginary_cm1: float | None
    frequencies_cm1: np.ndarray | None
    saddle_index: int | None
    converged: bool
    steps: int
    fmax_eV_per_A: float
    wall_s: float
    model_calls: int
    model_seconds: float
    hessian_calls: int
    irc: IRCResult | None
    verdict: str
    reason: str
    start: Atoms | None = None
    start_label: str = ""
    path: list[Atoms] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True when the verdict is ``"ts"``."""
        return self.verdict == "ts"

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no geometries)."""
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "energy_eV": self.energy_eV,
            "imaginary_cm1": self.imaginary_cm1,
            "saddle_index": self.saddle_index,
            "frequencies_cm1": None
            if self.frequencies_cm1 is None
            else [round(float(f), 2) for f in self.frequencies_cm1],
            "converged": self.converged,
            "steps": self.steps,
            "fmax_eV_per_A": self.fmax_eV_per_A,
            "wall_s": self.wall_s,
            "model_calls": self.model_calls,
            "model_seconds": self.model_seconds,
            "hessian_calls": self.hessian_calls,
            "start": self.start_label,
            "path_energies_eV": [float(im.info["energy"]) for im in self.path],
            "irc": None if self.irc is None else self.irc.summary(),
        }


# ---------------------------------------------------------------------------------- helpers
def connects(
    ends: Sequence[Atoms], reactant: Atoms, product: Atoms, bond_scale: float = 1.25
) -> tuple[bool, str]:
    """Whether two IRC ends are the reactant and the product (either order), by bond graphs.

    Graphs are compared atom by atom (atom ``i`` is the same atom everywhere); when that fails,
    up to a permutation of like atoms (canonical connectivity keys,
    :func:`hip_head.finetune.molgraph.graph_key`), provided the two ends differ exactly when the
    reactant and product do.

    Returns:
        ``(connected, description)``; the description names the molecules (connectivity keys).
    """
    from hip_head.finetune.molgraph import bond_graph, graph_key

    numbers = reactant.get_atomic_numbers()
    g_ends = [bond_graph(a, bond_scale) for a in ends]
    g_r, g_p = bond_graph(reactant, bond_scale), bond_graph(product, bond_scale)
    k_ends = [graph_key(numbers, g) for g in g_ends]
    k_r, k_p = graph_key(numbers, g_r), graph_key(numbers, g_p)
    text = f"IRC ends {k_ends[0]} and {k_ends[1]}; given reactant {k_r} and product {k_p}"
    if sorted(g_ends, key=sorted) == sorted([g_r, g_p], key=sorted):
        return True, text
    if sorted(k_ends) == sorted([k_r, k_p]) and (g_ends[0] == g_ends[1]) == (g_r == g_p):
        return True, text + " (the same molecules up to a relabelling of like atoms)"
    return False, text


def _energy(potential: MeteredPotential, atoms: Atoms) -> float:
    work = potential.attach(atoms)
    return float(work.get_potential_energy())


# ---------------------------------------------------------------------------------- search
def find_ts(
    reactant: Atoms | None = None,
    product: Atoms | None = None,
    *,
    guess: Atoms | None = None,
    model: Any,
    hessian: str | Callable[[Atoms], np.ndarray] = "model",
    hessian_every: int | None = None,
    fmax: float = 0.01,
    max_steps: int = 300,
    time_limit_s: float = 600.0,
    verify: bool = True,
    irc: bool = True,
    n_images: int = 9,
    interpolation: str = "geodesic",
    internal: bool = True,
    irc_options: dict[str, Any] | None = None,
    callback: Callback | None = None,
) -> TSResult:
    """Find a first-order saddle between two structures (or from a guess) and check it.

    Args:
        reactant: one end (N atoms, Å), or None with ``guess``.
        product: the other end: same elements in the same order; or None with ``guess``.
        guess: a TS guess to climb from (skips the path; the ends, when also given, are used
            only to check the IRC).
        model: the potential: a HIPModel, a model file or ``"pretrained"``, a
            ``(calculator, hessian_function)`` pair, or a
            :class:`~hip_head.chem.potentials.Potential`.
        hessian: ``"model"`` (the potential's Hessian as Sella's ``hessian_function``),
            ``"none"`` (Sella's own iterative estimates) or a callable ``atoms -> (3N, 3N)``
            Hessian in eV/Å². The saddle-index check always uses the potential's Hessian.
        hessian_every: None (default): the model Hessian at the start and whenever Sella's
            quasi-Newton-updated Hessian has lost the negative curvature of a first-order
            saddle (Sella's adaptive schedule); k: every k steps, updates in between (1: every
            step). On held-out reactions the adaptive schedule reached first-order saddles of
            the model's surface more often and with 3x less model time than every step with a
            HIP (docs/benchmarks.md).
        fmax: convergence threshold on the largest atomic force, eV/Å.
        max_steps: Sella step limit.
        time_limit_s: wall-time limit of the climb, s; the IRC has its own (``irc_options``).
        verify: check the saddle index (and run the IRC when ``irc``).
        irc: run the IRC from a verified first-order saddle.
        n_images: images of the interpolated path, ends included.
        interpolation: ``"geodesic"`` or ``"idpp"``.
        internal: Sella in internal (True) or Cartesian coordinates.
        irc_options: keyword arguments of :func:`hip_head.chem.irc.irc` (``step_A``,
            ``time_limit_s``, ...).
        callback: ``callback(step, energy_eV, fmax)`` after every Sella step.

    Returns:
        The :class:`TSResult`; ``verdict`` is ``"ts"`` when everything checks out.

    Raises:
        ChemistryError: bad arguments (no ends and no guess, different atoms in the ends, an
            unknown option).
        HIPError: the model cannot evaluate the structures (e.g. an element it does not know).
    """
    t0 = time.perf_counter()
    if guess is None and (reactant is None or product is None):
        raise ChemistryError("give a reactant and a product, or a TS guess")
    if reactant is not None and product is not None:
        check_same_atoms(reactant, product)
    if guess is not None:
        for end, name in ((reactant, "reactant"), (product, "product")):
            if end is not None:
                check_same_atoms(end, guess, f"{name} and TS guess")
    if interpolation not in INTERPOLATION_METHODS:
        raise ChemistryError(
            f"unknown interpolation {interpolation!r}: use one of {INTERPOLATION_METHODS}"
        )
    if hessian_every is not None and hessian_every < 1:
        raise ChemistryError(f"hessian_every must be >= 1, got {hessian_every}")
    if not (callable(hessian) or hessian in ("model", "none")):
        raise ChemistryError(f"hessian must be 'model', 'none' or a callable, got {hessian!r}")
    potential = MeteredPotential(as_potential(model), Meter())

    # 1. start
    path: list[Atoms] = []
    if guess is not None:
        start, start_label = bare(guess), "guess"
        _energy(potential, start)  # bad input raises here
    else:
        path = interpolate(reactant, product, n_images=n_images, method=interpolation)
        for image in path:
            image.info["energy"] = _energy(potential, image)
        k = 1 + int(np.argmax([im.info["energy"] for im in path[1:-1]]))
        start = copy_charge_spin(reactant, bare(path[k]))
        start_label = f"path image {k} of {len(path)}"

    # 2. climb
    if callable(hessian) and not isinstance(hessian, str):
        user_fn = hessian

        def hessian_fn(atoms: Atoms) -> np.ndarray:
            t = time.perf_counter()
            h = np.asarray(user_fn(atoms), dtype=np.float64).reshape(3 * len(atoms), -1)
            potential.meter.hessian_seconds += time.perf_counter() - t
            potential.meter.hessian_calls += 1
            return h

    elif hessian == "model":
        hessian_fn = potential.hessian
    else:
        hessian_fn = None
    work = potential.attach(start)
    steps, converged, reason = 0, False, ""
    failure = ""
    opt = None
    try:
        from sella import Sella

        kwargs: dict[str, Any] = {}
        if hessian_fn is not None:
            # Sella re-evaluates when steps since the last Hessian >= diag_every_n
            every = None if hessian_every is None else hessian_every - 1
            kwargs = dict(hessian_function=hessian_fn, diag_every_n=every)
        opt = Sella(work, order=1, internal=internal, logfile=None, trajectory=None, **kwargs)
        converged, steps, reason, _, _ = run_optimizer(
            opt, work, fmax, max_steps, time_limit_s, callback, t0
        )
    except InvalidStructureError as exc:  # the climb ran into colliding atoms
        steps = int(getattr(opt, "nsteps", steps))
        failure = f"Sella failed after {steps} steps: {exc}"[:300]
    except HIPError:
        raise
    except Exception as exc:  # noqa: BLE001 - Sella linear algebra, SCF failures
        steps = int(getattr(opt, "nsteps", steps))
        failure = f"Sella failed after {steps} steps: {type(exc).__name__}: {exc}"[:300]
    energy = float(work.get_potential_energy())
    f_last = max_force(work.get_forces())
    if converged and f_last >= fmax:
        reason = (
            "Sella's test (forces projected on its coordinates) passed, but the largest "
            "Cartesian force is not below the threshold"
        )
    converged = f_last < fmax and not failure
    atoms = bare(work)
    atoms.info.update(energy=energy, fmax=f_last)

    def result(verdict: str, why: str, **extra: Any) -> TSResult:
        used = potential.meter
        values = dict(imaginary_cm1=None, frequencies_cm1=None, saddle_index=None, irc=None)
        values.update(extra)
        return TSResult(
            atoms=atoms,
            energy_eV=energy,
            converged=converged,
            steps=steps,
            fmax_eV_per_A=f_last,
            wall_s=time.perf_counter() - t0,
            model_calls=used.calls,
            model_seconds=used.total_seconds,
            hessian_calls=used.hessian_calls,
            verdict=verdict,
            reason=why,
            start=start,
            start_label=start_label,
            path=path,
            **values,
        )

    if failure:
        return result("failed", failure)

    # 3. verify
    freqs = index = imaginary = None
    if verify or not converged:
        try:
            vib = vibrational_analysis(potential.hessian(atoms), atoms)
            freqs, index = vib.frequencies_cm1, vib.n_imaginary
            imaginary = float(freqs[0]) if index > 0 else None
        except HIPError:
            raise
        except Exception as exc:  # noqa: BLE001
            if converged:
                return result("failed", f"Hessian at the saddle failed: {exc}")
    found = dict(imaginary_cm1=imaginary, frequencies_cm1=freqs, saddle_index=index)
    if not converged:
        why = (
            f"Sella stopped after {steps} steps with largest force {f_last:.4f} eV/Å "
            f"(threshold {fmax} eV/Å): {reason}"
        )
        return result("not converged", why, **found)
    if not verify:
        return result("unverified", f"converged in {steps} steps; saddle index not checked")
    if index != 1:
        lowest = ", ".join(f"{f:.1f}" for f in freqs[: max(index, 3)])
        what = (
            "a minimum (no imaginary mode)"
            if index == 0
            else f"a stationary point with {index} imaginary modes"
        )
        why = (
            f"converged in {steps} steps to {what}, not a transition state (lowest "
            f"frequencies {lowest} cm⁻¹)"
        )
        return result(f"wrong saddle index {index}", why, **found)
    base = f"converged in {steps} steps; one imaginary mode {abs(imaginary):.1f}i cm⁻¹"
    if not irc:
        return result("ts", base + " (IRC not run)", **found)

    # IRC
    try:
        path_irc = _run_irc(atoms, potential, irc_options)
    except InvalidStructureError as exc:  # the path ran into colliding atoms
        return result("irc failed", f"{base}; the IRC failed: {exc}"[:400], **found)
    except HIPError:
        raise
    except Exception as exc:  # noqa: BLE001 - ChemistryError and numerical failures
        return result("irc failed", f"{base}; the IRC failed: {exc}"[:400], **found)
    ends = path_irc.ends
    hows = f"ends via {path_irc.reverse.how} / {path_irc.forward.how}"
    if reactant is None or product is None:
        from hip_head.finetune.molgraph import bond_graph, graph_key

        keys = [graph_key(atoms.get_atomic_numbers(), bond_graph(e)) for e in ends]
        same = " (the same bond graph: a conformer change)" if keys[0] == keys[1] else ""
        return result(
            "ts", f"{base}; IRC ends {keys[0]} and {keys[1]}{same}; {hows}", irc=path_irc, **found
        )
    ok, text = connects(ends, reactant, product)
    if not ok:
        return result("irc does not connect", f"{base}; {text}; {hows}", irc=path_irc, **found)
    return result("ts", f"{base}; {text}; {hows}", irc=path_irc, **found)


def _run_irc(ts: Atoms, potential: MeteredPotential, options: dict[str, Any] | None) -> IRCResult:
    return irc(ts, potential, **(options or {}))
