"""Reaction discovery with GFN2-xTB: first-order saddles and the two minima they connect.

For one reactant molecule, :func:`discover_reactions`:

1. relaxes an RDKit conformer to a GFN2-xTB minimum and computes its Hessian;
2. builds saddle-search starts (:func:`saddle_starts`): the minimum distorted at random, each
   hydrogen moved half-way towards another heavy atom or hydrogen (a guess for H shifts,
   tautomerisations and H₂ eliminations), and the minimum displaced along its softest modes
   and along the stiff modes with the most hydrogen motion;
3. climbs from each start to a first-order saddle with Sella (``order=1``, internal
   coordinates, the exact xTB Hessian every step), with step and wall-time limits, and keeps
   it only when its xTB Hessian has exactly one imaginary mode;
4. follows the imaginary mode both ways to two minima (:func:`descend`): Sella's IRC first; when
   that fails, a step of ``mode_step`` Å along the mode and a mass-weighted steepest descent
   (the IRC's definition, integrated with adaptive Euler steps), then a BFGS relaxation. Each
   end records which path reached it (``"sella_irc"`` or ``"steepest_descent"``); an end that
   relaxes onto a flat saddle is pushed along its imaginary mode and relaxed again;
5. keeps the saddle as a **reaction** only when the bond graphs of the two ends differ
   (:mod:`hip_head.finetune.molgraph`; a conformer change is recorded and skipped), both ends
   are minima and neither falls apart into more than two fragments or off a lone atom;
6. drops duplicates (:func:`deduplicate`: same pair of end graphs, TS energy within
   ``energy_tol``).

Every start that does not give a reaction is recorded with its reason (:class:`Attempt`);
nothing raises for a chemistry failure (SCF not converged, Sella stuck, an end that is not a
minimum). This module runs the steps in order; they live in :mod:`hip_head.finetune.
reaction_saddles` (starts and climbs, steps 2-3), :mod:`hip_head.finetune.reaction_ends`
(descents and the verdict, steps 4-5) and :mod:`hip_head.finetune.reaction_settings` (the
knobs), and their public names are importable from here. Frames and labels of the reactions:
:mod:`hip_head.finetune.reaction_data`.

Units: Å, eV, eV/Å, eV/Å², amu, cm⁻¹ (imaginary frequencies as negative numbers), K.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ase import Atoms

from hip_head.finetune.engines import LabelError, xtb_hessian
from hip_head.finetune.reaction_ends import (
    DescentPath,
    Reaction,
    classify_saddle,
    descend,
)
from hip_head.finetune.reaction_saddles import climb_to_saddle, saddle_starts
from hip_head.finetune.reaction_settings import (
    REACTION_KINDS,
    XTB_ACCURACY,
    XTB_METHOD,
    ReactionSettings,
)
from hip_head.finetune.sampling import conformers_from_smiles, relax_xtb

__all__ = [
    "REACTION_KINDS",
    "XTB_ACCURACY",
    "XTB_METHOD",
    "Attempt",
    "DescentPath",
    "Reaction",
    "ReactionSettings",
    "deduplicate",
    "descend",
    "discover_reactions",
    "saddle_starts",
    "xtb_hessian",
]


@dataclass
class Attempt:
    """One saddle-search start and what came of it.

    Attributes:
        start: how the start was made (e.g. ``"random:2"``, ``"h_move:5->0"``, ``"soft_mode:0-"``).
        outcome: ``"reaction"``, ``"duplicate"``, ``"conformer_change"``, ``"no_saddle"``,
            ``"higher_order"``, ``"end_not_minimum"``, ``"dissociated"`` (an end splits into
            more than two fragments or off a lone atom), ``"xtb_failed"`` or ``"time_limit"``.
        reason: a sentence for the record.
        seconds: wall time of this attempt, s.
    """

    start: str
    outcome: str
    reason: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------------- discovery
def discover_reactions(
    smiles: str,
    settings: ReactionSettings | None = None,
    seed: int = 0,
    log: Any = None,
) -> tuple[Atoms, list[Reaction], list[Attempt]]:
    """Find the reactions of one molecule (see the module docstring).

    Args:
        smiles: the reactant (H/C/N/O, neutral closed shell in the shipped set).
        settings: discovery knobs.
        seed: seed of the conformer, the starts and the sampling.
        log: a file for one progress line per attempt (None: quiet).

    Returns:
        ``(reactant minimum, reactions, attempts)``: distinct reactions in the order found, and
        every start with its outcome.

    Raises:
        ValueError: RDKit cannot parse or embed ``smiles``.
        LabelError: xTB fails on the reactant itself.
    """
    settings = settings or ReactionSettings()
    t_start = time.perf_counter()
    start = conformers_from_smiles(smiles, n=1, seed=seed)[0]
    molecule = start.info["molecule"]
    try:
        minimum = relax_xtb(start, fmax=settings.relax_fmax, steps=500)
    except Exception as exc:  # noqa: BLE001
        raise LabelError(f"xTB relaxation of {smiles} failed: {exc}") from exc
    hessian = xtb_hessian(minimum)
    reactions: list[Reaction] = []
    attempts: list[Attempt] = []
    for description, positions in saddle_starts(minimum, hessian, settings, seed):
        t0 = time.perf_counter()
        if t0 - t_start > settings.molecule_seconds:
            attempts.append(Attempt(description, "time_limit", "molecule time limit reached"))
            continue
        attempt = Attempt(description, "", "")
        saddle, outcome, reason = climb_to_saddle(minimum, positions, settings)
        if saddle is None:
            attempt.outcome, attempt.reason = outcome, reason
        else:
            attempt.outcome, attempt.reason, reaction = classify_saddle(
                minimum, molecule, saddle, description, settings, reactions
            )
            if reaction is not None and _is_duplicate(reactions, reaction, settings.energy_tol):
                attempt.outcome = "duplicate"
                attempt.reason = "same end graphs and TS energy as an earlier reaction"
            elif reaction is not None:
                reactions.append(reaction)
        attempt.seconds = time.perf_counter() - t0
        attempts.append(attempt)
        if log is not None:
            print(f"  {smiles} {description}: {attempt.outcome} {attempt.reason}", file=log)
    return minimum, reactions, attempts


def _is_duplicate(found: Sequence[Reaction], candidate: Reaction, energy_tol: float) -> bool:
    """Whether ``candidate`` duplicates one of ``found`` (see :func:`deduplicate`)."""
    everything = [*found, candidate]
    _, dropped = deduplicate(
        [r.end_keys for r in everything], [r.ts_energy for r in everything], energy_tol
    )
    return any(i == len(found) for i, _ in dropped)


def deduplicate(
    end_keys: Sequence[Sequence[str]], ts_energies: Sequence[float], energy_tol: float = 0.01
) -> tuple[list[int], list[tuple[int, int]]]:
    """Indices of distinct reactions, keeping the first of each duplicate group.

    Two reactions are duplicates when their unordered pairs of end keys are equal and their TS
    energies differ by less than ``energy_tol`` eV (the same reaction found from two reactant
    molecules, or run backwards).

    Args:
        end_keys: per reaction, the connectivity keys of its two ends.
        ts_energies: per reaction, the TS energy, eV.
        energy_tol: eV.

    Returns:
        ``(kept, dropped)``: kept indices in order; ``(dropped index, index it duplicates)``.
    """
    kept: list[int] = []
    dropped: list[tuple[int, int]] = []
    pairs = [sorted(k) for k in end_keys]
    for i, (pair, energy) in enumerate(zip(pairs, ts_energies, strict=True)):
        twin = next(
            (k for k in kept if pairs[k] == pair and abs(ts_energies[k] - energy) < energy_tol),
            None,
        )
        if twin is None:
            kept.append(i)
        else:
            dropped.append((i, twin))
    return kept, dropped
