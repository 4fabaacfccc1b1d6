"""What a saddle connects: the descent to two minima and the verdict reaction or not.

:func:`descend` follows the imaginary mode of a transition state down one side to a relaxed
GFN2-xTB minimum: Sella's IRC first; when that fails, a step of ``mode_step`` Å along the mode
and a mass-weighted steepest descent (the IRC's definition, integrated with adaptive Euler
steps), then a BFGS relaxation. Each end records which path reached it (``"sella_irc"`` or
``"steepest_descent"``); :func:`settle_minimum` pushes an end that relaxed onto a flat saddle
along its imaginary mode and relaxes it again. :func:`classify_saddle` runs both descents and
keeps the saddle as a :class:`Reaction` only when the bond graphs of the two ends differ
(:mod:`hip_head.finetune.molgraph`; a conformer change is recorded and skipped), both ends are
minima and neither falls apart into more than two fragments or off a lone atom.

Units: Å, eV, eV/Å, eV/Å², amu, cm⁻¹ (imaginary frequencies as negative numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.finetune.engines import LabelError, xtb_hessian
from hip_head.finetune.molgraph import (
    bond_graph,
    fragment_sizes,
    graph_key,
    reaction_type,
    smiles_of,
)
from hip_head.finetune.reaction_settings import XTB_ACCURACY, XTB_METHOD, ReactionSettings
from hip_head.finetune.sampling import _bare, _xtb_copy, relax_xtb
from hip_head.vibrations import vibrational_analysis

__all__ = ["DescentPath", "Reaction", "classify_saddle", "descend", "settle_minimum"]


@dataclass
class DescentPath:
    """One side of a saddle: the frames from the TS down to a minimum.

    Attributes:
        how: ``"sella_irc"`` or ``"steepest_descent"``.
        positions: (K, N, 3) Å, frames along the path (the first one step from the TS).
        energies: (K,) eV.
        minimum: the relaxed end (calculator-free, ``info["energy"]`` eV, ``info["converged"]``).
    """

    how: str
    positions: np.ndarray
    energies: np.ndarray
    minimum: Atoms


@dataclass
class Reaction:
    """A first-order saddle whose two ends are different molecules (bond graphs differ).

    Attributes:
        molecule: canonical SMILES of the reactant molecule the search started from.
        ts: the transition state (calculator-free, Å).
        ts_energy: eV.
        imaginary_cm1: the imaginary wavenumber as a negative number, cm⁻¹.
        ts_hessian: (3N, 3N) eV/Å² (xTB, at the TS).
        paths: the two descent paths (towards ``-mode`` and ``+mode``).
        end_smiles: SMILES of both ends (RDKit bond perception; the connectivity key when
            perception fails).
        end_keys: connectivity keys (:func:`graph_key`) of both ends.
        barriers_eV: (TS - end 0, TS - end 1), eV.
        start: the start that found it.
        reaction_type: bonds broken and formed, e.g. ``"-C-H +H-H +C-C"`` (element pairs).
    """

    molecule: str
    ts: Atoms
    ts_energy: float
    imaginary_cm1: float
    ts_hessian: np.ndarray
    paths: tuple[DescentPath, DescentPath]
    end_smiles: tuple[str, str]
    end_keys: tuple[str, str]
    barriers_eV: tuple[float, float]
    start: str
    reaction_type: str

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no geometries)."""
        return {
            "molecule": self.molecule,
            "ts_energy_eV": self.ts_energy,
            "imaginary_cm1": self.imaginary_cm1,
            "end_smiles": list(self.end_smiles),
            "end_keys": list(self.end_keys),
            "barriers_eV": list(self.barriers_eV),
            "end_paths": [p.how for p in self.paths],
            "start": self.start,
            "reaction_type": self.reaction_type,
            "atoms": len(self.ts),
        }


# ---------------------------------------------------------------------------------- descent
def _sella_irc(
    ts: Atoms, sign: float, settings: ReactionSettings
) -> tuple[list[np.ndarray], list[float]] | None:
    """Sella's IRC in one direction; the path, or None when it fails or does not converge."""
    from sella import IRC

    work = _xtb_copy(ts, XTB_METHOD, XTB_ACCURACY)
    positions: list[np.ndarray] = []
    energies: list[float] = []
    try:
        irc = IRC(work, trajectory=None, logfile=None, dx=0.1, eta=1e-4, gamma=0)
        direction = "forward" if sign > 0 else "reverse"
        converged = False
        steps = irc.irun(fmax=settings.descent_fmax, steps=settings.irc_steps, direction=direction)
        for converged in steps:  # noqa: B007 - the last value says whether it converged
            positions.append(work.get_positions().copy())
            energies.append(float(work.get_potential_energy()))
    except Exception:  # noqa: BLE001 - IRCInnerLoopConvergenceFailure, SCF failures
        return None
    if not converged or len(positions) < 2:
        return None
    return positions, energies


def _steepest_descent(
    ts: Atoms, mode: np.ndarray, sign: float, settings: ReactionSettings
) -> tuple[list[np.ndarray], list[float]]:
    """Mass-weighted steepest descent (:func:`hip_head.chem.irc.steepest_descent`) on xTB from
    ``ts + sign * mode_step * mode``, until ``descent_fmax`` or ``descent_steps``."""
    from hip_head.chem.irc import steepest_descent

    work = _xtb_copy(ts, XTB_METHOD, XTB_ACCURACY)
    start = ts.get_positions() + sign * settings.mode_step * mode.reshape(-1, 3)
    return steepest_descent(work, start, settings.descent_fmax, settings.descent_steps)


def descend(
    ts: Atoms, mode: np.ndarray, sign: float, settings: ReactionSettings | None = None
) -> DescentPath:
    """Follow the imaginary mode of a TS down one side to a relaxed minimum.

    Sella's IRC is tried first; when it raises or does not converge, a step of
    ``settings.mode_step`` Å along ``sign * mode`` followed by a mass-weighted steepest descent
    is used. Either way the last frame is relaxed by BFGS to ``settings.relax_fmax``.

    Args:
        ts: the transition state (N atoms, Å; ``info`` charge/spin used).
        mode: the imaginary mode (N, 3), unit Cartesian norm.
        sign: +1 or -1 (the direction along ``mode``).
        settings: step limits and thresholds.

    Returns:
        The path and its relaxed end.

    Raises:
        LabelError: xTB failed along the way.
    """
    settings = settings or ReactionSettings()
    try:
        path = _sella_irc(ts, sign, settings)
        how = "sella_irc"
        if path is None:
            path = _steepest_descent(ts, mode, sign, settings)
            how = "steepest_descent"
        positions, energies = path
        end = _bare(ts)
        end.set_positions(positions[-1])
        minimum = relax_xtb(end, fmax=settings.relax_fmax, steps=500)
    except Exception as exc:  # noqa: BLE001 - tblite's CalculationFailed and friends
        raise LabelError(f"descent from the TS failed: {exc}") from exc
    return DescentPath(how, np.asarray(positions), np.asarray(energies), minimum)


# ---------------------------------------------------------------------------------- verdict
def classify_saddle(
    template: Atoms,
    molecule: str,
    saddle: Atoms,
    description: str,
    settings: ReactionSettings,
    found: Sequence[Reaction],
) -> tuple[str, str, Reaction | None]:
    """Decide whether a saddle is a reaction: check it, descend both ways, compare the ends.

    The saddle must have exactly one imaginary mode and differ from the saddles of ``found``;
    both descents (:func:`descend`) must end at minima (:func:`settle_minimum`) whose bond
    graphs differ, and neither end may fall apart into more than two fragments or off a lone
    atom.

    Args:
        template: the reactant minimum (numbers; charge in ``info``).
        molecule: the reactant's canonical SMILES.
        saddle: the saddle (N atoms, Å; ``info["energy"]`` eV), from :func:`~hip_head.
            finetune.reaction_saddles.climb_to_saddle`.
        description: the start that found it.
        settings: thresholds and limits.
        found: the reactions found so far (a saddle equal to one of theirs is not descended).

    Returns:
        ``(outcome, reason, reaction)``: ``("reaction", reaction type, Reaction)``, or an outcome
        of :class:`~hip_head.finetune.reactions.Attempt` with its reason and None.
    """
    numbers = template.get_atomic_numbers()
    try:
        ts_hessian = xtb_hessian(saddle)
    except LabelError as exc:
        return "xtb_failed", str(exc)[:200], None
    vib = vibrational_analysis(ts_hessian, saddle)
    if vib.n_imaginary != 1:
        return "higher_order", f"{vib.n_imaginary} imaginary modes at the saddle", None
    for r in found:  # same TS found again: skip the descent
        if abs(r.ts_energy - saddle.info["energy"]) < 1e-4 and np.allclose(
            np.sort(np.linalg.eigvalsh(r.ts_hessian)), np.sort(np.linalg.eigvalsh(ts_hessian)),
            atol=0.05,
        ):  # fmt: skip
            return "duplicate", "same TS as an earlier start", None
    mode = vib.modes[0] / np.linalg.norm(vib.modes[0])
    try:
        paths = (descend(saddle, mode, -1.0, settings), descend(saddle, mode, 1.0, settings))
    except LabelError as exc:
        return "xtb_failed", str(exc)[:200], None
    graphs = [bond_graph(p.minimum, settings.bond_scale) for p in paths]
    if graphs[0] == graphs[1]:
        return "conformer_change", "both ends have the same bond graph", None
    for graph in graphs:
        sizes = fragment_sizes(len(numbers), graph)
        if len(sizes) > 2 or min(sizes) == 1:
            return "dissociated", f"an end falls apart into fragments of {sizes} atoms", None
    for p in paths:
        if not p.minimum.info.get("converged", False):
            fmax = p.minimum.info["fmax"]
            return "end_not_minimum", f"an end did not relax (max force {fmax:.3f} eV/Å)", None
    try:
        for p in paths:
            n_imag = settle_minimum(p, settings)
            if n_imag:
                return "end_not_minimum", f"an end keeps {n_imag} imaginary mode(s)", None
    except LabelError as exc:
        return "xtb_failed", str(exc)[:200], None
    graphs = [bond_graph(p.minimum, settings.bond_scale) for p in paths]
    if graphs[0] == graphs[1]:
        return "conformer_change", "both ends have the same bond graph", None
    ts_energy = float(saddle.info["energy"])
    keys = tuple(graph_key(numbers, g) for g in graphs)
    charge = int(template.info.get("charge", 0))
    saddle.info.update(kind="ts", imaginary_cm1=float(vib.frequencies_cm1[0]))
    reaction = Reaction(
        molecule=molecule,
        ts=saddle,
        ts_energy=ts_energy,
        imaginary_cm1=float(vib.frequencies_cm1[0]),
        ts_hessian=ts_hessian,
        paths=paths,
        end_smiles=tuple(smiles_of(p.minimum, charge, settings.bond_scale) for p in paths),
        end_keys=keys,
        barriers_eV=tuple(ts_energy - float(p.minimum.info["energy"]) for p in paths),
        start=description,
        reaction_type=reaction_type(numbers, graphs[0], graphs[1]),
    )
    return "reaction", reaction.reaction_type, reaction


def settle_minimum(path: DescentPath, settings: ReactionSettings, tries: int = 2) -> int:
    """Make the end of ``path`` a true minimum; returns its imaginary-mode count (0: done).

    A relaxation can stop on a flat saddle (a rotor, a symmetric geometry): the end is then
    pushed 0.1 Å along its imaginary mode and relaxed again, up to ``tries`` times; the
    settled end replaces ``path.minimum`` (with ``info["hessian"]``, (3N, 3N) eV/Å²).
    """
    for attempt in range(tries + 1):
        hessian = xtb_hessian(path.minimum)
        vib = vibrational_analysis(hessian, path.minimum)
        if vib.n_imaginary == 0:
            path.minimum.info["hessian"] = hessian
            return 0
        if attempt == tries:
            return vib.n_imaginary
        pushed = _bare(path.minimum)
        pushed.set_positions(path.minimum.get_positions() + 0.1 * vib.modes[0])
        try:
            path.minimum = relax_xtb(pushed, fmax=settings.relax_fmax, steps=500)
        except Exception as exc:  # noqa: BLE001
            raise LabelError(f"relaxation of an end failed: {exc}") from exc
    return vib.n_imaginary
