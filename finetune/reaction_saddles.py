"""Saddle searches around a minimum: the start geometries and the climb from each.

:func:`saddle_starts` builds the starts of :func:`~hip_head.finetune.reactions.
discover_reactions`: the minimum distorted at random, each hydrogen moved half-way towards
another heavy atom or hydrogen (a guess for H shifts, tautomerisations and H₂ eliminations), and
the minimum displaced along its softest modes and along the stiff modes with the most hydrogen
motion. :func:`climb_to_saddle` climbs from one start to a first-order saddle of GFN2-xTB with
Sella, within step and wall-time limits.

Units: Å, eV, eV/Å, eV/Å², cm⁻¹, s.
"""

from __future__ import annotations

import time

import numpy as np
from ase import Atoms

from hip_head.finetune.molgraph import bond_graph
from hip_head.finetune.reaction_settings import XTB_ACCURACY, XTB_METHOD, ReactionSettings
from hip_head.finetune.sampling import _bare, _saddle_optimizer
from hip_head.vibrations import vibrational_analysis

__all__ = ["climb_to_saddle", "saddle_starts"]


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


def climb_to_saddle(
    template: Atoms, positions: np.ndarray, settings: ReactionSettings
) -> tuple[Atoms | None, str, str]:
    """Climb from one start to a first-order saddle of GFN2-xTB.

    Sella ``order=1`` (internal coordinates, the exact xTB Hessian every step) from
    ``positions``, stopped at ``settings.saddle_fmax``, ``saddle_steps`` or ``saddle_seconds``.
    The end counts as a saddle when its largest force is below 3 x ``saddle_fmax``; its
    saddle index is not checked here.

    Args:
        template: the molecule (numbers, charge and spin in ``info``).
        positions: (N, 3) start positions, Å.
        settings: the limits.

    Returns:
        ``(saddle, "saddle", "")`` with the saddle calculator-free (``info["energy"]`` eV,
        ``info["fmax"]`` eV/Å), or ``(None, outcome, reason)`` with outcome ``"time_limit"``,
        ``"xtb_failed"`` or ``"no_saddle"``.
    """
    t0 = time.perf_counter()
    try:
        work, opt = _saddle_optimizer(template, positions, XTB_METHOD, XTB_ACCURACY)
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
