#!/usr/bin/env python
"""A small ReactBench: transition-state searches on held-out reactions, four Hessian sources.

Every reaction of the ``test`` split of ``data/reactions_xtb.db`` (molecules in no training
set) has a GFN2-xTB transition state and the two xTB minima its IRC leads to. From those two
minima :func:`hip_head.chem.ts.find_ts` (geodesic path, Sella ``order=1`` climb, saddle-index
check, IRC) is run with

* ``hip`` ("HIP"): the shipped HIP (``--model``, default ``pretrained``), its Hessian head
  evaluated at every Sella step;
* ``autograd``: the same backbone with its exact autograd Hessian at every step (same energy
  and forces);
* ``none`` ("no Hessian"): the same backbone's energy and forces, Sella's own Hessian estimates
  (``hessian="none"``); the saddle-index check and the IRC use its exact autograd Hessian;
* ``xtb`` ("xTB oracle"): GFN2-xTB (tblite) with its finite-difference Hessian
  (``XTBPotential``), the level the data were made with;
* ``hip_adaptive`` / ``autograd_adaptive`` (``--methods`` only): as ``hip`` / ``autograd``
  but with ``hessian_every=None``: the model Hessian at the start and whenever Sella's
  quasi-Newton-updated Hessian has lost the saddle's negative curvature;
* ``hip_climb_exact_check`` (``--methods`` only): the HIP head's Hessian guides the climb
  (adaptive schedule), the backbone's exact autograd Hessian checks the saddle index and
  drives the IRC.

The reactant is the lower-energy of the two xTB minima (so ΔE‡ is the larger of the two
barriers), the product the other. Per reaction and method one JSON line records: the verdict,
convergence, the found geometry's number of imaginary modes (Eckart-projected) under the
method's own Hessian, under the backbone's exact autograd Hessian (the model methods) and under
xTB (its finite-difference Hessian at that geometry), whether the IRC reaches the two given
minima, the found geometry, the RMSD to the dataset's xTB TS (Å, after a rigid-body
alignment, atoms in the same order), the barrier error, the log10 k error at 298.15 K,
optimiser steps, time in the potential and wall time.

Barriers: the method's ΔE‡ is its energy at the found TS minus its energy at the xTB reactant
minimum as given (not relaxed on the method's surface); the reference is the dataset's xTB TS
energy minus its xTB reactant energy. Rates: Eyring, ``k = k_B T / h · exp(−ΔG‡ / k_B T)``, with
ΔG‡ from ideal-gas harmonic thermochemistry (:func:`hip_head.chem.thermo.free_energy_barrier`,
rotational symmetry numbers 1): the method's from its own Hessians (the autograd one for "no
Hessian"; for xTB the dataset's reactant Hessian) at the found TS and at the xTB reactant
minimum, the reference from the dataset's xTB Hessians at its TS and reactant.
Where the method's ΔG‡ cannot be formed (the found TS does not have exactly one imaginary mode
under the method's Hessian, or the reactant geometry has one) the log10 k error falls back to
ΔE‡ for both sides (``log10k_basis`` says which was used).

``--split val`` runs the same searches on reactions of the ``val`` split instead (molecules
also in no training set), to choose among models without looking at the test reactions.

Searches are repeatable: the geodesic interpolation (and Sella's rare random restart) draw from
NumPy's global random state, seeded per reaction from ``--seed`` before every search, so every
method starts from the same path and a rerun repeats a search.

Results go to ``--out`` (default ``build/ts_search/``) as ``results.jsonl``, one line per
(reaction, method, model), written as each search ends; a rerun skips the lines already there
(delete the file to start over). At the end the script prints one markdown table over the
selected reactions and writes ``docs/benchmarks/ts_search_cpu.json`` (summary and machine) and
``docs/benchmarks/ts_search.png``. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ts_search.py --reactions 20
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ts_search.py --quick --methods hip none

Units: Å, eV (kcal/mol where named), cm⁻¹, s, K.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling ts_search_* modules

from ts_search_reactions import (  # noqa: E402
    DB,
    KCAL_MOL,
    TEMPERATURE_K,
    Reaction,
    _reaction_key,
    held_out_reaction_ids,
    load_reactions,
    log10_eyring,
    pick_reactions,
    reference_barrier,
)
from ts_search_report import (  # noqa: E402
    _ROW_KEYS,
    METHODS,
    _fmt,
    _jsonable,
    format_rows,
    format_table,
    machine_info,
    plot,
    read_results,
    summarize,
)

DOCS = REPO / "docs" / "benchmarks"

#: Methods whose model Hessian Sella asks for only at the start and when its updated Hessian
#: has lost the saddle's negative curvature (``find_ts(hessian_every=None)``).
ADAPTIVE_METHODS: frozenset[str] = frozenset(
    {"hip_adaptive", "autograd_adaptive", "hip_climb_exact_check"}
)

#: Methods run when ``--methods`` is not given.
DEFAULT_METHODS: tuple[str, ...] = ("hip", "autograd", "none", "xtb")


# ---------------------------------------------------------------------------------- one search
class Potentials:
    """The potential and the ``hessian`` argument of :func:`find_ts` of each method, each model
    loaded once, on first use (a rerun with every search done loads none).

    Args:
        model_name: the HIP (a saved model file or ``"pretrained"``).
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._models: dict[str, Any] = {}

    def _model(self, hessian: str) -> Any:
        from hip_head.chem._common import load_model
        from hip_head.chem.potentials import ModelPotential

        if hessian not in self._models:
            self._models[hessian] = ModelPotential(load_model(self.model_name, hessian=hessian))
        return self._models[hessian]

    def exact(self) -> Any:
        """The backbone with its exact autograd Hessian."""
        return self._model("autograd")

    def get(self, method: str, reaction: Reaction) -> tuple[Any, Any]:
        """``(potential, hessian)`` for ``find_ts``: the HIP with ``"model"`` (``hip``), the
        autograd-Hessian model with ``"none"`` (``none``: Sella's own estimates in the climb,
        the exact Hessian only for the saddle-index check and IRC) or ``"model"``
        (``autograd``), or GFN2-xTB with the reaction's charge and spin."""
        if method in ("hip", "hip_adaptive"):
            return self._model("head"), "model"
        if method == "none":
            return self._model("autograd"), "none"
        if method in ("autograd", "autograd_adaptive"):
            return self._model("autograd"), "model"
        if method == "hip_climb_exact_check":
            return self._model("autograd"), self._model("head").hessian
        if method == "xtb":
            return _xtb(reaction), "model"
        raise ValueError(f"unknown method {method!r}: use {', '.join(METHODS)}")


def path_seed(reaction_id: str, seed: int = 0) -> int:
    """The NumPy seed of a reaction's search (``seed`` plus the id's numbers)."""
    molecule, index = (_reaction_key(reaction_id) + (0, 0))[:2]
    return (int(seed) * 1_000_003 + 1000 * molecule + index) % 2**32


def _xtb(reaction: Reaction) -> Any:
    from hip_head.chem.potentials import XTBPotential

    return XTBPotential(charge=reaction.charge, spin=reaction.spin)


def _energy(potential: Any, atoms: Atoms) -> float:
    work = atoms.copy()
    work.calc = potential.calculator()
    return float(work.get_potential_energy())


def run_search(
    reaction: Reaction,
    method: str,
    potential: Any,
    hessian: Any,
    args: argparse.Namespace,
    reference: dict[str, Any],
    exact: Any = None,
) -> dict[str, Any]:
    """One TS search and its checks; never raises for a failed search (``error`` says why).

    Args:
        reaction: the reaction.
        method: a key of :data:`METHODS`.
        potential: the method's potential.
        hessian: ``find_ts``'s ``hessian`` argument.
        args: the parsed command line (fmax, steps, time limit, model).
        reference: :func:`reference_barrier` of the reaction.
        exact: the backbone with its autograd Hessian, for ``exact_saddle_index`` (the found
            geometry's saddle index under the exact Hessian of the model's own surface); None
            for xTB.

    Returns:
        The JSON-ready record of this (reaction, method).
    """
    from hip_head.chem.paths import rmsd
    from hip_head.chem.thermo import free_energy_barrier, thermo
    from hip_head.chem.ts import find_ts
    from hip_head.vibrations import vibrational_analysis

    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "reaction": reaction.id,
        "method": method,
        "label": METHODS[method],
        "model": args.model if method != "xtb" else "GFN2-xTB",
        "molecule": reaction.molecule,
        "atoms": reaction.n_atoms,
        "settings": {
            "fmax": args.fmax,
            "max_steps": args.steps,
            "time_limit_s": args.time_limit,
            "hessian_every": "adaptive" if method in ADAPTIVE_METHODS else 1,
        },
        "verdict": "error",
        "reason": "",
        "success": False,
        "converged": False,
        "error": None,
    }
    # the geodesic interpolation draws from NumPy's global random state: the same seed per
    # reaction gives every method the same path, and a rerun the same search
    np.random.seed(path_seed(reaction.id, args.seed))
    try:
        result = find_ts(
            reaction.reactant,
            reaction.product,
            model=potential,
            hessian=hessian,
            hessian_every=None if method in ADAPTIVE_METHODS else 1,
            fmax=args.fmax,
            max_steps=args.steps,
            time_limit_s=args.time_limit,
            irc_options={"time_limit_s": args.time_limit},
        )
    except Exception as exc:  # noqa: BLE001 - one failure is a result, not the end of the run
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        record["reason"] = "find_ts raised"
        record["traceback"] = traceback.format_exc(limit=4)[-2000:]
        record["total_wall_s"] = time.perf_counter() - t0
        return record
    irc_ran = result.irc is not None or result.verdict == "irc failed"
    record.update(
        verdict=result.verdict,
        reason=result.reason,
        success=result.verdict == "ts",
        converged=bool(result.converged),
        steps=int(result.steps),
        fmax_eV_per_A=float(result.fmax_eV_per_A),
        saddle_index=result.saddle_index,
        imaginary_cm1=result.imaginary_cm1,
        irc_connects=(result.verdict == "ts") if irc_ran else None,
        model_calls=int(result.model_calls),
        hessian_calls=int(result.hessian_calls),
        model_seconds=float(result.model_seconds),
        search_wall_s=float(result.wall_s),
        start=result.start_label,
        ts_energy_eV=float(result.energy_eV),
    )
    found = result.atoms
    record["rmsd_A"] = rmsd(reaction.ts, found)
    record["ts_positions"] = np.round(found.get_positions(), 6).tolist()
    if exact is not None:
        try:
            vib = vibrational_analysis(exact.hessian(found), found)
            record["exact_saddle_index"] = int(vib.n_imaginary)
        except Exception as exc:  # noqa: BLE001
            record["exact_saddle_index"] = None
            record["exact_error"] = f"{type(exc).__name__}: {exc}"[:300]

    # xTB's verdict on the found geometry
    xtb = _xtb(reaction)
    xtb_hessian = None
    try:
        xtb_hessian = xtb.hessian(found)
        vib = vibrational_analysis(xtb_hessian, found)
        record["xtb_saddle_index"] = int(vib.n_imaginary)
        record["xtb_imaginary_cm1"] = float(vib.frequencies_cm1[0]) if vib.n_imaginary else None
    except Exception as exc:  # noqa: BLE001 - SCF failures at odd geometries
        record["xtb_saddle_index"] = None
        record["xtb_error"] = f"{type(exc).__name__}: {exc}"[:300]
    record["xtb_one_imaginary"] = record["xtb_saddle_index"] == 1

    # barrier: the method's energies at the found TS and at the xTB reactant minimum as given
    try:
        e_reactant = _energy(potential, reaction.reactant)
        e_ts = _energy(potential, found)
        d_e = (e_ts - e_reactant) / KCAL_MOL
        record.update(
            reactant_energy_eV=e_reactant,
            dE_kcal=d_e,
            dE_ref_kcal=reference["dE_kcal"],
            barrier_error_kcal=d_e - reference["dE_kcal"],
        )
    except Exception as exc:  # noqa: BLE001
        record["barrier_error"] = f"{type(exc).__name__}: {exc}"[:300]
        record["total_wall_s"] = time.perf_counter() - t0
        return record

    # rate: ΔG‡ of the method (its Hessians) against xTB's, else ΔE‡ against ΔE‡
    d_g, note = None, ""
    if reference["dG_kcal"] is None:
        note = reference["note"]
    else:
        try:
            if method == "xtb":
                r_thermo = reference["reactant_thermo"]
                h_ts = xtb_hessian if xtb_hessian is not None else xtb.hessian(found)
            else:
                r_thermo = thermo(
                    reaction.reactant,
                    hessian=potential.hessian(reaction.reactant),
                    energy=e_reactant,
                    temperature_K=TEMPERATURE_K,
                )
                h_ts = potential.hessian(found)
            t_thermo = thermo(
                found, hessian=h_ts, energy=e_ts, temperature_K=TEMPERATURE_K, allow_saddle=True
            )
            barrier = free_energy_barrier(r_thermo, t_thermo, temperature_K=TEMPERATURE_K)
            d_g = barrier.delta_g_kcal_per_mol
        except Exception as exc:  # noqa: BLE001 - wrong saddle index etc.: fall back to ΔE‡
            note = f"{type(exc).__name__}: {exc}"[:300]
    if d_g is not None:
        model_b, ref_b, basis = d_g, reference["dG_kcal"], "dG"
    else:
        model_b, ref_b, basis = d_e, reference["dE_kcal"], "dE"
    record.update(
        dG_kcal=d_g,
        dG_ref_kcal=reference["dG_kcal"],
        log10k=log10_eyring(model_b * KCAL_MOL),
        log10k_ref=log10_eyring(ref_b * KCAL_MOL),
        log10k_basis=basis,
        log10k_note=note,
    )
    record["log10k_error"] = record["log10k"] - record["log10k_ref"]
    record["total_wall_s"] = time.perf_counter() - t0
    return record


# ---------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="TS searches from the two xTB minima of held-out reactions with the HIP, "
        "autograd and no Hessian, and GFN2-xTB as the oracle."
    )
    parser.add_argument("--reactions", type=int, default=20, help="how many (default 20)")
    parser.add_argument(
        "--reaction",
        action="append",
        default=None,
        help="a reaction id (repeatable; instead of --reactions)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the reaction choice")
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="reactions of this split (default test; val to choose among models without "
        "looking at the test reactions)",
    )
    parser.add_argument("--quick", action="store_true", help="2 reactions (a smoke test)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=list(METHODS),
        help=f"which (default {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--model", default="pretrained", help="HIP model (default pretrained)")
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å (default 0.01)")
    parser.add_argument("--steps", type=int, default=300, help="Sella step limit (default 300)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=300.0,
        help="wall-time limit of each climb and of each IRC, s (default 300)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--db", type=Path, default=DB, help="the reaction database")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "ts_search")
    parser.add_argument("--json", type=Path, default=DOCS / "ts_search_cpu.json")
    parser.add_argument("--plot", type=Path, default=DOCS / "ts_search.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.reactions = 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sizes = held_out_reaction_ids(args.db, args.split)
    ids = (
        list(args.reaction)
        if args.reaction
        else pick_reactions(list(sizes), args.reactions, args.seed)
    )
    missing = [r for r in ids if r not in sizes]
    if missing:
        raise SystemExit(f"not {args.split}-split reactions of {args.db}: {', '.join(missing)}")
    reactions = load_reactions(ids, args.db)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    done = read_results(results_path)
    potentials = Potentials(args.model)
    print(
        f"{len(ids)} reactions ({', '.join(f'{r} ({sizes[r]} atoms)' for r in ids)}), methods "
        f"{', '.join(args.methods)}; results in {results_path}",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    for rid in ids:
        reaction = reactions[rid]
        reference = None
        for method in args.methods:
            key = (rid, method, "GFN2-xTB" if method == "xtb" else args.model)
            if key in done:
                records.append(done[key])
                continue
            reference = reference or reference_barrier(reaction)
            potential, hessian = potentials.get(method, reaction)
            exact = None if method == "xtb" else potentials.exact()
            record = run_search(reaction, method, potential, hessian, args, reference, exact)
            with results_path.open("a") as handle:
                handle.write(json.dumps(record, default=_jsonable) + "\n")
            records.append(record)
            print(
                f"{rid} {METHODS[method]}: {record['verdict']}, {record.get('steps', '–')} steps, "
                f"xTB index {record.get('xtb_saddle_index', '–')}, RMSD "
                f"{_fmt(record.get('rmsd_A'), '.3f')} Å, {record.get('total_wall_s', 0):.1f} s",
                flush=True,
            )
    summary = {m: summarize([r for r in records if r["method"] == m]) for m in args.methods}
    print()
    print(format_table(summary))
    print()
    print(format_rows(records))
    report = {
        "description": "TS searches (hip_head.chem.ts.find_ts) from the two xTB minima of "
        "held-out reactions; see benchmarks/ts_search.py",
        "settings": {
            "reactions": ids,
            "seed": args.seed,
            "split": args.split,
            "methods": args.methods,
            "model": args.model,
            "fmax_eV_per_A": args.fmax,
            "max_steps": args.steps,
            "time_limit_s": args.time_limit,
            "temperature_K": TEMPERATURE_K,
            "db": str(args.db.resolve().relative_to(REPO))
            if args.db.resolve().is_relative_to(REPO)
            else str(args.db),
        },
        "summary": {m: {"label": METHODS[m], **s} for m, s in summary.items()},
        "rows": [{k: r.get(k) for k in _ROW_KEYS} for r in records],
        "machine": machine_info(args.threads),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=_jsonable) + "\n")
    plot(summary, records, args.plot)
    print(f"\nwrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
