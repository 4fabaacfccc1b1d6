"""Intrinsic reaction coordinate: from a transition state down both sides to two minima.

:func:`irc` checks that the structure is a first-order saddle of the model (exactly one
imaginary Eckart mode of its Hessian), then follows the imaginary mode down both ways:

1. Sella's IRC (mass-weighted, the model's Hessian at the TS for the first direction, quasi-Newton
   updates along the way);
2. when that fails (its inner loop does not converge, or it does not move off the TS), a step of
   ``step_A`` Å along the imaginary mode followed by a mass-weighted steepest descent (adaptive
   Euler steps, the IRC's definition) down to ``descent_fmax``.

Either way the last point is relaxed to a minimum (:func:`~hip_head.chem.optimize.optimize`,
``fmax``), and the relaxed end's saddle index is checked. Each branch records which path
produced its end (``"sella_irc"`` or ``"displace_descent"``) and the geometries and energies
along it; :meth:`IRCResult.profile` joins both into an energy profile along the arc length.
Drawing it and writing the path to files: :mod:`hip_head.chem.outputs` (:func:`plot_profile`
is importable from here too); the ``hip irc`` command: :mod:`hip_head.chem.search_commands`.

Directions: ``"forward"`` is ``+mode`` and ``"reverse"`` is ``-mode``, with the imaginary mode
(unit Cartesian norm) signed so that its largest-magnitude component is positive.

Units: Å, eV, eV/Å, cm⁻¹ (imaginary frequencies as negative numbers), s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.chem._common import ChemistryError
from hip_head.chem.optimize import OPT_METHODS, optimize
from hip_head.chem.outputs import plot_profile
from hip_head.chem.potentials import MeteredPotential, bare, max_force, metered
from hip_head.errors import HIPError
from hip_head.vibrations import VibrationalAnalysis, vibrational_analysis

__all__ = [
    "IRC_METHODS",
    "IRCBranch",
    "IRCResult",
    "irc",
    "plot_profile",
    "steepest_descent",
    "transition_mode",
]

#: Values of the ``method`` argument of :func:`irc`.
IRC_METHODS = ("auto", "sella", "displace")


@dataclass
class IRCBranch:
    """One side of the IRC: the path from the TS down to a relaxed minimum.

    Attributes:
        direction: ``"forward"`` (+mode) or ``"reverse"`` (-mode).
        how: ``"sella_irc"`` (Sella's IRC) or ``"displace_descent"`` (step along the mode,
            steepest descent).
        end: the relaxed end (calculator-free; ``info["energy"]`` eV).
        energy_eV: energy of the relaxed end, eV.
        converged: the end's relaxation reached ``fmax``.
        fmax: largest force at the end, eV/Å.
        saddle_index: imaginary modes of the end (0: a minimum).
        positions: (K, N, 3) Å, the geometries from the first point after the TS to the relaxed
            end (IRC or descent, then relaxation).
        energies: (K,) eV along ``positions``.
        note: why Sella's IRC was not used, when it was not ("" otherwise).
    """

    direction: str
    how: str
    end: Atoms
    energy_eV: float
    converged: bool
    fmax: float
    saddle_index: int | None
    positions: np.ndarray
    energies: np.ndarray
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no geometries)."""
        return {
            "direction": self.direction,
            "how": self.how,
            "energy_eV": self.energy_eV,
            "converged": self.converged,
            "fmax_eV_per_A": self.fmax,
            "saddle_index": self.saddle_index,
            "points": int(len(self.energies)),
            "note": self.note,
        }


@dataclass
class IRCResult:
    """Result of :func:`irc`.

    Attributes:
        ts: the transition state (calculator-free).
        ts_energy_eV: its energy, eV.
        imaginary_cm1: its imaginary frequency (negative), cm⁻¹.
        forward: the branch along +mode.
        reverse: the branch along -mode.
        wall_s: wall time, s.
        model_seconds: time in the potential, s.
        model_calls: energy/force evaluations.
        hessian_calls: Hessian evaluations.
        notes: remarks (e.g. the TS forces were not small), "" when none.
    """

    ts: Atoms
    ts_energy_eV: float
    imaginary_cm1: float
    forward: IRCBranch
    reverse: IRCBranch
    wall_s: float
    model_seconds: float
    model_calls: int
    hessian_calls: int
    notes: str = ""

    @property
    def ends(self) -> tuple[Atoms, Atoms]:
        """(reverse end, forward end), relaxed."""
        return self.reverse.end, self.forward.end

    @property
    def end_energies_eV(self) -> tuple[float, float]:
        """(reverse end, forward end) energies, eV."""
        return self.reverse.energy_eV, self.forward.energy_eV

    @property
    def barriers_eV(self) -> tuple[float, float]:
        """(TS − reverse end, TS − forward end), eV."""
        return (
            self.ts_energy_eV - self.reverse.energy_eV,
            self.ts_energy_eV - self.forward.energy_eV,
        )

    def path(self) -> list[Atoms]:
        """The whole path as structures, reverse end → TS → forward end (``info["energy"]``)."""
        frames = []
        numbers = self.ts.get_atomic_numbers()
        rev, fwd = self.reverse, self.forward
        positions = [*rev.positions[::-1], self.ts.get_positions(), *fwd.positions]
        energies = [*rev.energies[::-1], self.ts_energy_eV, *fwd.energies]
        for x, e in zip(positions, energies):
            frame = Atoms(numbers=numbers, positions=x)
            frame.info["energy"] = float(e)
            frames.append(frame)
        return frames

    def profile(self) -> tuple[np.ndarray, np.ndarray]:
        """Energy along the path against the Cartesian arc length from the TS.

        Returns:
            ``(s, energy)``: (K,) arc length, Å (negative on the reverse side, 0 at the TS), and
            (K,) energies, eV, ordered reverse end → TS → forward end.
        """
        x_ts = self.ts.get_positions()

        def arc(branch: IRCBranch) -> np.ndarray:
            pts = np.concatenate([x_ts[None], branch.positions])
            steps = np.linalg.norm((pts[1:] - pts[:-1]).reshape(len(pts) - 1, -1), axis=1)
            return np.cumsum(steps)

        s = np.concatenate([-arc(self.reverse)[::-1], [0.0], arc(self.forward)])
        e = np.concatenate(
            [self.reverse.energies[::-1], [self.ts_energy_eV], self.forward.energies]
        )
        return s, e

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no geometries)."""
        return {
            "ts_energy_eV": self.ts_energy_eV,
            "imaginary_cm1": self.imaginary_cm1,
            "barriers_eV": {"reverse": self.barriers_eV[0], "forward": self.barriers_eV[1]},
            "forward": self.forward.summary(),
            "reverse": self.reverse.summary(),
            "wall_s": self.wall_s,
            "model_seconds": self.model_seconds,
            "model_calls": self.model_calls,
            "hessian_calls": self.hessian_calls,
            "notes": self.notes,
        }


def _format_frequencies(freqs: np.ndarray, k: int = 4) -> str:
    shown = ", ".join(f"{abs(f):.1f}i" if f < 0 else f"{f:.1f}" for f in np.asarray(freqs)[:k])
    return f"{shown} cm⁻¹" if shown else "no vibrational modes"


def transition_mode(vib: VibrationalAnalysis) -> np.ndarray:
    """The imaginary (lowest) mode, (N, 3), unit Cartesian norm, signed so that its
    largest-magnitude component is positive."""
    mode = np.array(vib.modes[0], dtype=np.float64)
    mode /= np.linalg.norm(mode)
    flat = mode.ravel()
    if flat[np.argmax(np.abs(flat))] < 0:
        mode = -mode
    return mode


def _check_saddle(vib: VibrationalAnalysis, allow_higher_order: bool, label: str) -> None:
    n = vib.n_imaginary
    if n == 0:
        raise ChemistryError(
            f"{label} is a minimum, not a transition state: no imaginary frequency (lowest "
            f"frequencies {_format_frequencies(vib.frequencies_cm1)}); an IRC starts from a "
            "first-order saddle (find one with `hip ts`)"
        )
    if n > 1 and not allow_higher_order:
        raise ChemistryError(
            f"{label} is a saddle of index {n}, not a transition state: {n} imaginary "
            f"frequencies ({_format_frequencies(vib.frequencies_cm1, n)}); an IRC starts from a "
            "first-order saddle"
        )


def _sella_irc(
    ts: Atoms,
    potential: MeteredPotential,
    dx: float,
    irc_fmax: float,
    max_steps: int,
    mode: np.ndarray,
    deadline: float,
) -> tuple[dict[int, tuple[list[np.ndarray], list[float], str]], str]:
    """Both directions of Sella's IRC.

    Returns:
        ``{side (+1 along the mode, -1 against): (positions, energies, note)}`` for the
        directions that left the TS, and a note on those that did not.
    """
    from sella import IRC

    work = potential.attach(ts)
    e_ts = float(work.get_potential_energy())
    x_ts = ts.get_positions()
    try:
        driver = IRC(
            work,
            trajectory=None,
            logfile=None,
            dx=dx,
            eta=1e-4,
            gamma=0,
            hessian_function=potential.hessian,
        )
    except Exception as exc:  # noqa: BLE001
        return {}, f"Sella IRC could not start ({type(exc).__name__}: {exc})"[:200]
    found: dict[int, tuple[list[np.ndarray], list[float], str]] = {}
    notes = []
    for direction in ("forward", "reverse"):
        positions: list[np.ndarray] = []
        energies: list[float] = []
        stopped = ""
        try:
            for _ in driver.irun(fmax=irc_fmax, steps=max_steps, direction=direction):
                x = work.get_positions().copy()
                if positions or np.linalg.norm(x - x_ts) > 1e-8:
                    positions.append(x)
                    energies.append(float(work.get_potential_energy()))
                    # Sella's own test also wants a positive lowest eigenvalue of its
                    # unprojected Hessian, which near a minimum is a rigid-body mode: stop on
                    # the forces alone
                    if max_force(work.get_forces()) < irc_fmax:
                        break
                if time.perf_counter() > deadline:
                    break
        except HIPError:
            raise
        except Exception as exc:  # noqa: BLE001 - IRCInnerLoopConvergenceFailure and friends
            stopped = f"{type(exc).__name__} {exc}".strip()[:120]
        if not positions:
            notes.append(f"Sella IRC {direction}: {stopped or 'no step taken'}")
            continue
        moved = positions[-1] - x_ts
        if e_ts - energies[-1] < 1e-3 or np.linalg.norm(moved) < 0.05:
            notes.append(f"Sella IRC {direction}: did not leave the TS {stopped}".strip())
            continue
        side = 1 if float(np.sum(moved * mode)) > 0 else -1
        if side in found:
            notes.append(f"Sella IRC {direction}: went down the same side as the other direction")
            continue
        note = ""
        if stopped:  # it failed on the way down: relax from its last point
            note = (
                f"Sella IRC {direction} stopped after {len(positions)} points ({stopped}); "
                "relaxed from there"
            )
        found[side] = (positions, energies, note)
    return found, "; ".join(notes)


def steepest_descent(
    atoms: Atoms,
    start: np.ndarray,
    descent_fmax: float,
    max_steps: int,
    deadline: float | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """Mass-weighted steepest descent from ``start`` on the calculator attached to ``atoms``.

    Adaptive Euler steps of length ``ds`` (amu^½ Å) along the mass-weighted gradient: a step
    that raises the energy is undone and ``ds`` halved; an accepted one grows ``ds`` by 1.2 (up
    to 0.3). Stops below ``descent_fmax`` eV/Å, after ``max_steps`` steps, when ``ds`` falls
    below 1e-4 or at ``deadline`` (a ``time.perf_counter()`` value).

    Args:
        atoms: the structure with its calculator (its positions are overwritten).
        start: [N, 3] starting positions, Å.
        descent_fmax: largest atomic force at which to stop, eV/Å.
        max_steps: step limit.
        deadline: optional wall-clock limit.

    Returns:
        (accepted positions [N, 3] Å, their energies eV), the start first.
    """
    sqrt_m = np.sqrt(np.repeat(atoms.get_masses(), 3))
    x = np.asarray(start, dtype=float).ravel()
    atoms.set_positions(x.reshape(-1, 3))
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces().ravel()
    positions, energies = [x.reshape(-1, 3).copy()], [energy]
    ds = 0.1
    for _ in range(max_steps):
        if max_force(forces) < descent_fmax:
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        g_mw = -forces / sqrt_m
        trial = x - ds * (g_mw / np.linalg.norm(g_mw)) / sqrt_m
        atoms.set_positions(trial.reshape(-1, 3))
        trial_energy = float(atoms.get_potential_energy())
        if trial_energy > energy:
            ds *= 0.5
            if ds < 1e-4:
                break
            continue
        x, energy = trial, trial_energy
        forces = atoms.get_forces().ravel()
        positions.append(x.reshape(-1, 3).copy())
        energies.append(energy)
        ds = min(1.2 * ds, 0.3)
    return positions, energies


def _descent(
    ts: Atoms,
    potential: MeteredPotential,
    mode: np.ndarray,
    sign: int,
    step_A: float,
    descent_fmax: float,
    max_steps: int,
    deadline: float,
) -> tuple[list[np.ndarray], list[float]]:
    """``ts + sign * step_A * mode``, then :func:`steepest_descent`."""
    start = ts.get_positions() + sign * step_A * mode
    return steepest_descent(potential.attach(ts), start, descent_fmax, max_steps, deadline)


def irc(
    ts: Atoms,
    model: Any,
    *,
    step_A: float = 0.15,
    fmax: float = 0.01,
    max_steps: int = 200,
    method: str = "auto",
    irc_dx: float = 0.1,
    irc_fmax: float = 0.05,
    descent_fmax: float = 0.1,
    relax_method: str = "bfgs",
    relax_steps: int = 500,
    time_limit_s: float | None = 600.0,
    allow_higher_order: bool = False,
    hessian: np.ndarray | None = None,
) -> IRCResult:
    """Follow the imaginary mode of a transition state down both sides to two minima.

    Args:
        ts: the transition state (N atoms, Å); not modified.
        model: the potential (a HIPModel, model file or ``"pretrained"``, a
            ``(calculator, hessian_function)`` pair or a
            :class:`~hip_head.chem.potentials.Potential`).
        step_A: fallback: the first step along the imaginary mode, Å (Cartesian norm).
        fmax: relaxation threshold of both ends, eV/Å.
        max_steps: step limit per direction of Sella's IRC and of the fallback descent.
        method: ``"auto"`` (Sella's IRC, the fallback where it fails), ``"sella"`` (Sella only;
            a failed direction raises) or ``"displace"`` (the fallback only).
        irc_dx: Sella's IRC step, amu^½ Å.
        irc_fmax: Sella's IRC stops below this largest force, eV/Å (then the relaxation).
        descent_fmax: the fallback descent stops below this largest force, eV/Å.
        relax_method: optimiser of the ends (:data:`~hip_head.chem.optimize.OPT_METHODS`).
        relax_steps: step limit of each end's relaxation.
        time_limit_s: wall-time limit of the whole call, s (None: none); what is left of the
            path when it runs out is relaxed with what time remains.
        allow_higher_order: follow the lowest mode of a higher-order saddle instead of raising.
        hessian: the TS Hessian (3N, 3N) eV/Å² if already known (saves one evaluation).

    Returns:
        The :class:`IRCResult`.

    Raises:
        ChemistryError: the structure is a minimum (no imaginary mode; the message lists its
            lowest frequencies) or a higher-order saddle, bad arguments, or ``method="sella"``
            and Sella's IRC failed.
        HIPError: the model cannot evaluate the structure.
    """
    method = method.lower()
    if method not in IRC_METHODS:
        raise ChemistryError(f"unknown IRC method {method!r}: use one of {IRC_METHODS}")
    if relax_method not in OPT_METHODS:
        raise ChemistryError(f"unknown relax_method {relax_method!r}: use one of {OPT_METHODS}")
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else float("inf"))
    potential = metered(model)
    meter0 = potential.meter.copy()
    ts = bare(ts)
    work = potential.attach(ts)
    e_ts = float(work.get_potential_energy())
    f_ts = max_force(work.get_forces())
    if len(ts) < 2:
        raise ChemistryError("an IRC needs at least two atoms")
    h = potential.hessian(ts) if hessian is None else np.asarray(hessian, dtype=np.float64)
    vib = vibrational_analysis(h, ts)
    _check_saddle(vib, allow_higher_order, "the structure")
    mode = transition_mode(vib)
    notes = []
    if f_ts > 0.05:
        notes.append(f"the TS is not stationary (largest force {f_ts:.3f} eV/Å)")

    paths: dict[int, tuple[list[np.ndarray], list[float], str]] = {}
    sella_note = ""
    if method in ("auto", "sella"):
        paths, sella_note = _sella_irc(ts, potential, irc_dx, irc_fmax, max_steps, mode, deadline)
        if method == "sella" and len(paths) < 2:
            raise ChemistryError(f"Sella's IRC failed: {sella_note or 'no path'}")
    branches = {}
    for sign, direction in ((1, "forward"), (-1, "reverse")):
        how = "sella_irc"
        if sign in paths:
            positions, energies, note = paths[sign]
        else:
            how = "displace_descent"
            note = sella_note if method == "auto" else "fallback requested"
            positions, energies = _descent(
                ts, potential, mode, sign, step_A, descent_fmax, max_steps, deadline
            )
        start = bare(ts)
        start.set_positions(positions[-1])
        left = None if time_limit_s is None else max(deadline - time.perf_counter(), 1.0)
        relaxed = optimize(
            start,
            potential,
            method=relax_method,
            fmax=fmax,
            max_steps=relax_steps,
            time_limit_s=left,
        )
        positions = [*positions, *relaxed.path_positions[1:]]
        energies = [*energies, *relaxed.path_energies[1:]]
        branches[direction] = IRCBranch(
            direction=direction,
            how=how,
            end=relaxed.atoms,
            energy_eV=relaxed.energy_eV,
            converged=relaxed.converged,
            fmax=relaxed.fmax,
            saddle_index=relaxed.saddle_index,
            positions=np.asarray(positions),
            energies=np.asarray(energies, dtype=np.float64),
            note=note,
        )
    used = potential.meter.since(meter0)
    return IRCResult(
        ts=ts,
        ts_energy_eV=e_ts,
        imaginary_cm1=float(vib.frequencies_cm1[0]),
        forward=branches["forward"],
        reverse=branches["reverse"],
        wall_s=time.perf_counter() - t0,
        model_seconds=used.total_seconds,
        model_calls=used.calls,
        hessian_calls=used.hessian_calls,
        notes="; ".join(notes),
    )
