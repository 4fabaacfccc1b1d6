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
minimum). Frames and labels of the reactions: :mod:`hip_head.finetune.reaction_data`.

Units: Å, eV, eV/Å, eV/Å², amu, cm⁻¹ (imaginary frequencies as negative numbers), K.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.finetune.labels import LabelError, label_xtb
from hip_head.finetune.molgraph import (
    bond_graph,
    fragment_sizes,
    graph_key,
    reaction_type,
    smiles_of,
)
from hip_head.finetune.sampling import (
    _bare,
    _xtb_calc,
    conformers_from_smiles,
    relax_xtb,
)
from hip_head.vibrations import vibrational_analysis

__all__ = [
    "REACTION_KINDS",
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

#: Values of ``info["kind"]`` / ``meta["kind"]`` on reaction frames.
REACTION_KINDS = ("ts", "irc", "minimum", "thermal")

#: The level of theory of discovery and labels (tblite method and accuracy).
XTB_METHOD = "GFN2-xTB"
XTB_ACCURACY = 0.01


@dataclass
class ReactionSettings:
    """Knobs of discovery and framing (defaults: the shipped reaction dataset).

    Attributes:
        n_random: random distortions of the minimum (Gaussian, ``random_sigma`` Å per coordinate).
        random_sigma: standard deviation of the random distortion, Å.
        n_hydrogen_moves: hydrogen-transfer guesses (seeded choice among all candidates).
        n_soft_modes: softest Eckart modes tried (± ``mode_displacement``).
        n_hydrogen_modes: stiff modes with the most hydrogen motion tried (± 0.5 Å).
        mode_displacement: displacement along the soft modes, Å.
        saddle_steps: Sella step limit per start.
        saddle_seconds: wall-time limit per Sella run, s.
        saddle_fmax: Sella convergence threshold, eV/Å; a saddle is kept up to 3x this.
        molecule_seconds: no new start is tried after this long on one molecule, s.
        mode_step: first step along the imaginary mode when Sella's IRC fails, Å (Cartesian norm).
        irc_steps: Sella IRC step limit per direction.
        descent_steps: mass-weighted steepest-descent step limit per direction.
        descent_fmax: the descent hands over to BFGS below this largest force, eV/Å.
        relax_fmax: final relaxation threshold of each end, eV/Å.
        energy_tol: TS energies closer than this (eV) with the same end graphs are duplicates.
        bond_scale: bond when distance < bond_scale x (sum of covalent radii); 1.25 keeps H₂
            (0.74 Å against 1.25 x 0.62 Å) bonded.
        n_irc_frames: frames kept along each descent path.
        n_ts_thermal: normal-mode frames around the TS (300 K plus ± ``ts_amplitude`` Å along
            the imaginary mode).
        ts_amplitude: largest displacement along the imaginary mode, Å.
        n_minimum_thermal: normal-mode frames around each minimum (half at 300 K, half at
            1000 K).
    """

    n_random: int = 8
    random_sigma: float = 0.3
    n_hydrogen_moves: int = 10
    n_soft_modes: int = 1
    n_hydrogen_modes: int = 1
    mode_displacement: float = 0.3
    saddle_steps: int = 100
    saddle_seconds: float = 30.0
    saddle_fmax: float = 0.01
    molecule_seconds: float = 400.0
    mode_step: float = 0.15
    irc_steps: int = 40
    descent_steps: int = 300
    descent_fmax: float = 0.1
    relax_fmax: float = 0.005
    energy_tol: float = 0.01
    bond_scale: float = 1.25
    n_irc_frames: int = 6
    n_ts_thermal: int = 24
    ts_amplitude: float = 0.25
    n_minimum_thermal: int = 8


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


# ---------------------------------------------------------------------------------- starts
def saddle_starts(
    minimum: Atoms,
    hessian: np.ndarray,
    settings: ReactionSettings,
    seed: int,
) -> list[tuple[str, np.ndarray]]:
    """Start geometries for saddle searches around a minimum.

    Args:
        minimum: the minimum (N atoms, Å).
        hessian: its (3N, 3N) Hessian, eV/Å².
        settings: how many starts of each kind.
        seed: seed of the random distortions and of the choice of hydrogen moves.

    Returns:
        ``(description, positions (N, 3) Å)`` per start, in a fixed order for a given seed.
    """
    rng = np.random.default_rng(seed)
    x0 = minimum.get_positions()
    numbers = minimum.get_atomic_numbers()
    starts: list[tuple[str, np.ndarray]] = []
    for k in range(settings.n_random):
        starts.append((f"random:{k}", x0 + rng.normal(scale=settings.random_sigma, size=x0.shape)))

    bonds = bond_graph(minimum, settings.bond_scale)
    neighbours: dict[int, set[int]] = {i: set() for i in range(len(minimum))}
    for i, j in bonds:
        neighbours[i].add(j)
        neighbours[j].add(i)
    moves = []
    for h in np.nonzero(numbers == 1)[0]:
        if len(neighbours[h]) != 1:
            continue
        donor = next(iter(neighbours[h]))
        for target in range(len(minimum)):
            if target in (h, donor) or target in neighbours[h]:
                continue
            if numbers[target] == 1 and target not in neighbours[donor]:
                # H₂ formation from two hydrogens on the same or neighbouring atoms only
                if not any(target in neighbours[n] for n in neighbours[donor] | {donor}):
                    continue
            if np.linalg.norm(x0[target] - x0[donor]) > 3.2:
                continue
            moves.append((int(h), int(donor), int(target)))
    order = rng.permutation(len(moves))[: settings.n_hydrogen_moves] if moves else []
    for m in order:
        h, donor, target = moves[int(m)]
        mid = 0.5 * (x0[donor] + x0[target])
        axis = x0[target] - x0[donor]
        axis /= np.linalg.norm(axis)
        side = x0[h] - mid
        side -= (side @ axis) * axis
        norm = np.linalg.norm(side)
        side = side / norm if norm > 1e-6 else np.cross(axis, [0.0, 0.0, 1.0])
        pos = x0.copy()
        pos[h] = mid + 0.6 * side
        starts.append((f"h_move:{h}:{donor}->{target}", pos))

    vib = vibrational_analysis(hessian, minimum)
    for k in range(min(settings.n_soft_modes, vib.n_modes)):
        for sign, tag in ((1.0, "+"), (-1.0, "-")):
            disp = sign * settings.mode_displacement * vib.modes[k]
            starts.append((f"soft_mode:{k}{tag}", x0 + disp))
    is_h = numbers == 1
    if is_h.any():
        weight = (vib.modes[:, is_h, :] ** 2).sum(axis=(1, 2))
        stiff = [k for k in range(vib.n_modes) if 400.0 < vib.frequencies_cm1[k] < 2500.0]
        stiff.sort(key=lambda k: -weight[k])
        for k in stiff[: settings.n_hydrogen_modes]:
            for sign, tag in ((1.0, "+"), (-1.0, "-")):
                starts.append((f"h_mode:{k}{tag}", x0 + sign * 0.5 * vib.modes[k]))
    return starts


# ---------------------------------------------------------------------------------- saddles
def xtb_hessian(atoms: Atoms) -> np.ndarray:
    """The GFN2-xTB Hessian (3N, 3N), eV/Å², of ``atoms`` (:func:`label_xtb`).

    Raises:
        LabelError: tblite failed.
    """
    n3 = 3 * len(atoms)
    return label_xtb(atoms, method=XTB_METHOD, accuracy=XTB_ACCURACY).hessian.reshape(n3, n3)


def _climb(
    template: Atoms, positions: np.ndarray, settings: ReactionSettings
) -> tuple[Atoms | None, str, str]:
    """Sella ``order=1`` from ``positions``; returns (saddle or None, outcome, reason)."""
    from sella import Sella

    work = _bare(template)
    work.set_positions(positions)
    work.calc = _xtb_calc(template, XTB_METHOD, XTB_ACCURACY)
    t0 = time.perf_counter()
    try:
        opt = Sella(
            work,
            order=1,
            internal=True,
            hessian_function=xtb_hessian,
            diag_every_n=1,
            logfile=None,
            trajectory=None,
        )
        for _ in opt.irun(fmax=settings.saddle_fmax, steps=settings.saddle_steps):
            if time.perf_counter() - t0 > settings.saddle_seconds:
                return None, "time_limit", f"Sella past {settings.saddle_seconds:.0f} s"
        forces = work.get_forces()
        energy = float(work.get_potential_energy())
    except Exception as exc:  # noqa: BLE001 - tblite SCF failures, Sella linear-algebra errors
        return None, "xtb_failed", f"{type(exc).__name__}: {exc}"[:200]
    f_max = float(np.linalg.norm(forces, axis=1).max())
    if f_max > 3.0 * settings.saddle_fmax:
        return None, "no_saddle", f"Sella stopped at max force {f_max:.3f} eV/Å"
    out = _bare(work)
    out.info.update(energy=energy, fmax=f_max)
    return out, "saddle", ""


# ---------------------------------------------------------------------------------- descent
def _sella_irc(
    ts: Atoms, sign: float, settings: ReactionSettings
) -> tuple[list[np.ndarray], list[float]] | None:
    """Sella's IRC in one direction; the path, or None when it fails or does not converge."""
    from sella import IRC

    work = _bare(ts)
    work.calc = _xtb_calc(ts, XTB_METHOD, XTB_ACCURACY)
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

    work = _bare(ts)
    work.calc = _xtb_calc(ts, XTB_METHOD, XTB_ACCURACY)
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


# ---------------------------------------------------------------------------------- discovery
def _is_duplicate(found: Sequence[Reaction], candidate: Reaction, energy_tol: float) -> bool:
    """Whether ``candidate`` duplicates one of ``found`` (see :func:`deduplicate`)."""
    everything = [*found, candidate]
    _, dropped = deduplicate(
        [r.end_keys for r in everything], [r.ts_energy for r in everything], energy_tol
    )
    return any(i == len(found) for i, _ in dropped)


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
    numbers = minimum.get_atomic_numbers()
    for description, positions in saddle_starts(minimum, hessian, settings, seed):
        t0 = time.perf_counter()
        if t0 - t_start > settings.molecule_seconds:
            attempts.append(Attempt(description, "time_limit", "molecule time limit reached"))
            continue
        attempt = Attempt(description, "", "")
        saddle, outcome, reason = _climb(minimum, positions, settings)
        if saddle is None:
            attempt.outcome, attempt.reason = outcome, reason
        else:
            attempt.outcome, attempt.reason, reaction = _classify(
                minimum, molecule, saddle, description, settings, reactions, numbers
            )
            if reaction is not None:
                reactions.append(reaction)
        attempt.seconds = time.perf_counter() - t0
        attempts.append(attempt)
        if log is not None:
            print(f"  {smiles} {description}: {attempt.outcome} {attempt.reason}", file=log)
    return minimum, reactions, attempts


def _classify(
    template: Atoms,
    molecule: str,
    saddle: Atoms,
    description: str,
    settings: ReactionSettings,
    found: Sequence[Reaction],
    numbers: np.ndarray,
) -> tuple[str, str, Reaction | None]:
    """Check a saddle (one imaginary mode), descend both ways, decide reaction or not."""
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
            n_imag = _settle_minimum(p, settings)
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
    if _is_duplicate(found, reaction, settings.energy_tol):
        return "duplicate", "same end graphs and TS energy as an earlier reaction", None
    return "reaction", reaction.reaction_type, reaction


def _settle_minimum(path: DescentPath, settings: ReactionSettings, tries: int = 2) -> int:
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
