"""Reaction frames and labels: from discovered reactions to a labelled dataset.

:func:`reaction_frames` turns a :class:`~hip_head.finetune.reactions.Reaction` into frames:
the TS, both minima, frames along both descent paths and normal-mode samples around the TS
(including displacements along the imaginary mode) and around both minima; ``info["kind"]``
is ``"ts"``, ``"irc"``, ``"minimum"`` or ``"thermal"``. :func:`build_reactions` does discovery
and GFN2-xTB labelling for one molecule (the unit of work of ``hip data reactions``,
:func:`main_reactions`, and of ``scripts/make_reaction_dataset.py``).

Units: Å, eV, eV/Å, eV/Å², cm⁻¹ (imaginary frequencies as negative numbers), K.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.finetune.engines import LabelError, label_xtb, xtb_hessian
from hip_head.finetune.reaction_ends import Reaction
from hip_head.finetune.reaction_settings import XTB_ACCURACY, XTB_METHOD, ReactionSettings
from hip_head.finetune.reactions import discover_reactions
from hip_head.finetune.sampling import _bare, normal_mode_samples

__all__ = ["build_reactions", "main_reactions", "reaction_frames"]


def _evenly(count: int, n: int) -> list[int]:
    """Up to ``n`` indices spread evenly over range(1, count - 1) (path interior)."""
    interior = list(range(1, max(count - 1, 1)))
    if len(interior) <= n:
        return interior
    return sorted({interior[round(k)] for k in np.linspace(0, len(interior) - 1, n)})


def reaction_frames(
    reaction: Reaction, settings: ReactionSettings | None = None, seed: int = 0
) -> list[Atoms]:
    """Unlabelled frames of one reaction, each with ``info["kind"]`` in :data:`REACTION_KINDS`.

    The TS; both relaxed ends (``"minimum"``); ``n_irc_frames`` frames evenly along each descent
    path (``"irc"``, with ``info["side"]`` 0 or 1); ``n_ts_thermal`` normal-mode frames around
    the TS at 300 K with a uniform displacement of up to ``ts_amplitude`` Å along the imaginary
    mode, and ``n_minimum_thermal`` around each end at 300 K and 1000 K (``"thermal"``, with
    ``info["near"]`` ``"ts"`` or ``"minimum"`` and ``info["temperature_K"]``).

    Returns:
        Calculator-free frames, each with ``info["molecule"]`` (the reactant's SMILES).
    """
    settings = settings or ReactionSettings()
    n3 = 3 * len(reaction.ts)
    frames: list[Atoms] = []

    def add(atoms: Atoms, kind: str, **info: Any) -> None:
        frame = _bare(reaction.ts)
        frame.set_positions(atoms.get_positions() if isinstance(atoms, Atoms) else atoms)
        frame.info.update(kind=kind, molecule=reaction.molecule, **info)
        frames.append(frame)

    add(reaction.ts, "ts", imaginary_cm1=reaction.imaginary_cm1)
    for side, path in enumerate(reaction.paths):
        add(path.minimum, "minimum", side=side)
        for k in _evenly(len(path.positions), settings.n_irc_frames):
            add(path.positions[k], "irc", side=side)
    near_ts = normal_mode_samples(
        reaction.ts,
        reaction.ts_hessian.reshape(n3, n3),
        (300.0,),
        settings.n_ts_thermal,
        seed=seed,
        reaction_amplitude=settings.ts_amplitude,
    )
    for frame in near_ts:
        add(frame, "thermal", near="ts", temperature_K=300.0)
    half = settings.n_minimum_thermal // 2
    for side, path in enumerate(reaction.paths):
        end_hessian = path.minimum.info.get("hessian")
        if end_hessian is None:
            end_hessian = xtb_hessian(path.minimum)
        around = normal_mode_samples(
            path.minimum,
            end_hessian,
            (300.0, 1000.0),
            half,
            seed=seed + 1 + side,
        )
        for frame in around:
            add(frame, "thermal", near="minimum", temperature_K=frame.info["temperature_K"])
    return frames


# ---------------------------------------------------------------------------------- one molecule
def build_reactions(
    index: int,
    smiles: str,
    settings: ReactionSettings | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Discover one molecule's reactions and label all their frames with GFN2-xTB.

    The unit of work of the dataset builders (picklable; runs in a worker process). Never
    raises for chemistry: a molecule whose xTB relaxation fails comes back with no reactions
    and the failure in ``"failure"``.

    Args:
        index: job index (mixed into the seed).
        smiles: the reactant.
        settings: discovery and framing knobs.
        seed: base seed.

    Returns:
        ``{"name", "smiles", "molecule", "samples": [HessianSample], "reactions": [summary],
        "attempts": [Attempt as dict], "dropped_frames": [str], "failure": str | None,
        "settings": the settings as a dict, "seconds"}``. Each sample's ``meta`` holds
        ``molecule``, ``smiles``, ``kind``, ``reaction`` (index within this molecule) and the
        frame's info (``near``, ``side``, ``temperature_K``, ``imaginary_cm1``).
    """
    settings = settings or ReactionSettings()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "name": smiles,
        "smiles": smiles,
        "molecule": smiles,
        "samples": [],
        "reactions": [],
        "attempts": [],
        "dropped_frames": [],
        "failure": None,
        "settings": asdict(settings),
    }
    try:
        _, reactions, attempts = discover_reactions(smiles, settings, seed=seed + 1000 * index)
    except (ValueError, LabelError) as exc:
        result["failure"] = f"{type(exc).__name__}: {exc}"[:300]
        result["seconds"] = time.perf_counter() - t0
        return result
    result["attempts"] = [asdict(a) for a in attempts]
    for k, reaction in enumerate(reactions):
        result["molecule"] = reaction.molecule
        try:
            frames = reaction_frames(reaction, settings, seed=seed + 1000 * index + 17 * k)
        except LabelError as exc:
            result["dropped_frames"].append(f"reaction {k}: framing failed ({exc})")
            continue
        result["reactions"].append(reaction.summary() | {"index": k})
        for frame in frames:
            try:
                sample = label_xtb(frame, method=XTB_METHOD, accuracy=XTB_ACCURACY)
            except LabelError as exc:
                result["dropped_frames"].append(f"reaction {k} {frame.info['kind']}: {exc}")
                continue
            sample.meta.update(
                molecule=reaction.molecule, smiles=smiles, reaction=k, kind=frame.info["kind"]
            )
            for key in ("near", "side", "temperature_K", "imaginary_cm1"):
                if key in frame.info:
                    value = frame.info[key]
                    sample.meta[key] = value if isinstance(value, str) else float(value)
            result["samples"].append(sample)
    result["seconds"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------- CLI
def main_reactions(argv: Sequence[str] | None = None) -> int:
    """``hip data reactions``: discover and label the reactions of molecules given as SMILES.

    Writes (replaces) an ASE database (Hessians as float32 upper triangles) with ``kind``,
    ``reaction``
    (``"<molecule index>:<reaction index>"``) and ``molecule`` columns, plus a JSON report of
    every reaction, every attempt and every failure next to it. Resumable: per-molecule
    results are cached under ``--work``.
    """
    from hip_head.finetune.data import write_compact_db
    from hip_head.finetune.jobs import run_cached

    parser = argparse.ArgumentParser(
        prog="hip data reactions", description=main_reactions.__doc__.splitlines()[0]
    )
    parser.add_argument("smiles", nargs="+", help="SMILES strings or files with one per line")
    parser.add_argument("--out", type=Path, required=True, help="output .db")
    parser.add_argument("--work", type=Path, default=None, help="cache dir (default OUT.work)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-starts", type=int, default=None, help="fewer saddle starts")
    args = parser.parse_args(argv)

    molecules: list[str] = []
    for item in args.smiles:
        path = Path(item)
        if path.is_file():
            molecules += [s.split()[0] for s in path.read_text().splitlines() if s.strip()]
        else:
            molecules.append(item)
    settings = ReactionSettings()
    if args.max_starts is not None:
        settings.n_random = min(settings.n_random, args.max_starts)
        settings.n_hydrogen_moves = min(settings.n_hydrogen_moves, args.max_starts)
    work = args.work or args.out.with_suffix(".work")
    results = run_cached(
        {i: (s, settings, args.seed) for i, s in enumerate(molecules)},
        build_reactions,
        work,
        args.workers,
        describe=lambda r: f", {len(r['reactions'])} reactions",
    )
    samples = []
    for i, r in enumerate(results):
        for s in r["samples"]:
            s.meta["reaction"] = f"{i}:{s.meta['reaction']}"
            samples.append(s)
    if samples:  # a fresh file each run
        write_compact_db(
            samples,
            args.out,
            key_value_pairs=lambda s: {
                "molecule": s.meta["molecule"],
                "kind": s.meta["kind"],
                "reaction": s.meta["reaction"],
            },
        )
    report = [
        {k: r[k] for k in ("smiles", "reactions", "attempts", "dropped_frames", "failure")}
        for r in results
    ]
    report_path = args.out.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=1))
    n_reactions = sum(len(r["reactions"]) for r in results)
    print(
        f"{n_reactions} reactions, {len(samples)} frames from {len(results)} molecules: "
        f"{args.out if samples else '(no frames, nothing written)'}; report {report_path}",
        file=sys.stdout,
    )
    return 0
