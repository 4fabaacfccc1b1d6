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
  (``XTBPotential``), the level the data were made with.

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
import datetime
import json
import math
import os
import platform
import statistics
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units

REPO = Path(__file__).resolve().parents[1]
DB = REPO / "data" / "reactions_xtb.db"
DOCS = REPO / "docs" / "benchmarks"

#: Method key -> label in the tables.
METHODS: dict[str, str] = {
    "hip": "HIP",
    "autograd": "autograd",
    "none": "no Hessian",
    "xtb": "xTB oracle",
}

#: Temperature of the rates, K.
TEMPERATURE_K = 298.15

#: One kcal/mol in eV.
KCAL_MOL = units.kcal / units.mol


# ---------------------------------------------------------------------------------- data
@dataclass
class Reaction:
    """One held-out reaction: xTB minima, TS, energies and Hessians from the dataset.

    Attributes:
        id: the dataset's reaction id, ``"<molecule index>:<reaction index>"``.
        molecule: SMILES of the molecule the reaction was found from.
        reactant: the lower-energy xTB minimum (Å; ``info`` charge and spin).
        product: the other xTB minimum.
        ts: the xTB transition state.
        reactant_energy_eV: xTB energy of the reactant, eV.
        product_energy_eV: xTB energy of the product, eV.
        ts_energy_eV: xTB energy of the TS, eV.
        reactant_hessian: xTB Hessian at the reactant, (3N, 3N) eV/Å².
        ts_hessian: xTB Hessian at the TS, (3N, 3N) eV/Å².
        charge: total charge, e.
        spin: spin multiplicity 2S + 1.
    """

    id: str
    molecule: str
    reactant: Atoms
    product: Atoms
    ts: Atoms
    reactant_energy_eV: float
    product_energy_eV: float
    ts_energy_eV: float
    reactant_hessian: np.ndarray
    ts_hessian: np.ndarray
    charge: int
    spin: int

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.ts)


def _reaction_key(reaction_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in reaction_id.split(":"))


def _connect(db: Path) -> Any:
    import ase.db

    if not Path(db).is_file():
        raise FileNotFoundError(f"no reaction database at {db}")
    return ase.db.connect(str(db), type="db", use_lock_file=False)


def held_out_reaction_ids(db: Path = DB, split: str = "test") -> dict[str, int]:
    """Reaction ids of ``split`` (the ``split`` column) with their atom counts, sorted by id."""
    rows = _connect(db).select(kind="ts", split=split, include_data=False)
    sizes = {str(row.get("reaction")): int(row.natoms) for row in rows}
    return dict(sorted(sizes.items(), key=lambda item: _reaction_key(item[0])))


def pick_reactions(ids: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` of ``ids``, reproducibly: the first ``n`` of a seeded permutation (so a smaller
    ``n`` picks a subset of a larger one), in the permutation's order."""
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order[: max(0, n)]]


def _frame(row: Any) -> tuple[Atoms, float, np.ndarray, dict[str, Any]]:
    """(atoms with charge/spin info, energy eV, Hessian (3N, 3N) eV/Å², meta) of a db row
    (the layout :class:`hip_head.finetune.data.AseDbDataset` reads)."""
    from hip_head.finetune.data import unpack_triu

    data = row.data or {}
    n3 = 3 * len(row.numbers)
    if "hessian" in data:
        hessian = np.asarray(data["hessian"], dtype=np.float64).reshape(n3, n3)
    else:
        hessian = unpack_triu(data["hessian_triu"], n3)
    atoms = Atoms(numbers=row.numbers, positions=row.positions)
    atoms.info.update(charge=int(data.get("charge", 0)), spin=int(data.get("spin", 1)))
    return atoms, float(row.energy), hessian, dict(data.get("meta") or {})


def load_reactions(ids: Sequence[str], db: Path = DB) -> dict[str, Reaction]:
    """The reactions ``ids`` of the database: the TS and both minima (``kind`` ``"ts"`` and
    ``"minimum"`` rows of the same ``reaction``; ``meta["side"]`` 0 and 1 are the two ends of
    the TS's IRC), with xTB energies and Hessians. The reactant is the lower-energy minimum.

    Raises:
        KeyError: an id does not have one TS and two minima.
    """
    connection = _connect(db)
    out: dict[str, Reaction] = {}
    for rid in ids:
        ts_rows = list(connection.select(reaction=rid, kind="ts"))
        end_rows = list(connection.select(reaction=rid, kind="minimum"))
        if len(ts_rows) != 1 or len(end_rows) != 2:
            raise KeyError(f"reaction {rid}: {len(ts_rows)} TS and {len(end_rows)} minima in {db}")
        ts, e_ts, h_ts, meta = _frame(ts_rows[0])
        ends = sorted((_frame(r) for r in end_rows), key=lambda f: float(f[3].get("side", 0)))
        (reactant, e_r, h_r, _), (product, e_p, _, _) = sorted(ends, key=lambda f: f[1])
        out[rid] = Reaction(
            id=rid,
            molecule=str(meta.get("molecule", ts_rows[0].get("molecule", ""))),
            reactant=reactant,
            product=product,
            ts=ts,
            reactant_energy_eV=e_r,
            product_energy_eV=e_p,
            ts_energy_eV=e_ts,
            reactant_hessian=h_r,
            ts_hessian=h_ts,
            charge=int(ts.info["charge"]),
            spin=int(ts.info["spin"]),
        )
    return out


# ---------------------------------------------------------------------------------- rates
def log10_eyring(delta_g_eV: float, temperature_K: float = TEMPERATURE_K) -> float:
    """log10 of the Eyring rate constant (s⁻¹) for a barrier ΔG‡ (eV); computed in logs so
    that no barrier under- or overflows."""
    from hip_head.chem.thermo import eyring_rate

    kt = units.kB * temperature_K
    return math.log10(eyring_rate(0.0, temperature_K)) - delta_g_eV / (kt * math.log(10.0))


def reference_barrier(reaction: Reaction) -> dict[str, Any]:
    """xTB's ΔE‡ and ΔG‡ (kcal/mol) from the dataset's TS and reactant energies and Hessians."""
    from hip_head.chem.thermo import free_energy_barrier, thermo

    out: dict[str, Any] = {
        "dE_kcal": (reaction.ts_energy_eV - reaction.reactant_energy_eV) / KCAL_MOL,
        "dG_kcal": None,
        "note": "",
    }
    try:
        r = thermo(
            reaction.reactant,
            hessian=reaction.reactant_hessian,
            energy=reaction.reactant_energy_eV,
            temperature_K=TEMPERATURE_K,
        )
        t = thermo(
            reaction.ts,
            hessian=reaction.ts_hessian,
            energy=reaction.ts_energy_eV,
            temperature_K=TEMPERATURE_K,
            allow_saddle=True,
        )
        out["dG_kcal"] = free_energy_barrier(r, t, temperature_K=TEMPERATURE_K).delta_g_kcal_per_mol
        out["reactant_thermo"] = r
    except Exception as exc:  # noqa: BLE001 - a reference without ΔG‡ falls back to ΔE‡
        out["note"] = f"xTB ΔG‡ not available: {exc}"[:300]
    return out


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
        if method == "hip":
            return self._model("head"), "model"
        if method == "none":
            return self._model("autograd"), "none"
        if method == "autograd":
            return self._model("autograd"), "model"
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
            "hessian_every": 1,
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


# ---------------------------------------------------------------------------------- results
def read_results(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(reaction, method, model) -> record`` of a results file (later lines win; unreadable
    lines, e.g. one cut short by a kill, are skipped)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            out[(rec["reaction"], rec["method"], rec["model"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mae(values: Sequence[float]) -> float | None:
    return float(np.mean(np.abs(values))) if values else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-method summary of records of one method.

    Success: verdict ``"ts"`` (converged, one imaginary mode under the method's Hessian, IRC
    reaching both given minima). One imaginary under xTB: converged and xTB's Hessian at the
    found geometry has exactly one imaginary mode; one imaginary (exact): the same with the
    backbone's autograd Hessian (model methods). RMSD, barrier and log10 k errors are over the
    successful searches; steps and times over all.
    """
    n = len(records)
    ok = [r for r in records if r.get("success")]
    return {
        "n": n,
        "success": len(ok),
        "converged": sum(bool(r.get("converged")) for r in records),
        "xtb_one_imaginary": sum(
            bool(r.get("converged")) and r.get("xtb_saddle_index") == 1 for r in records
        ),
        "exact_one_imaginary": sum(
            bool(r.get("converged")) and r.get("exact_saddle_index") == 1 for r in records
        ),
        "exact_checked": sum(r.get("exact_saddle_index") is not None for r in records),
        "errors": sum(r.get("error") is not None for r in records),
        "median_rmsd_A": _median([r["rmsd_A"] for r in ok if r.get("rmsd_A") is not None]),
        "mae_barrier_kcal": _mae(
            [r["barrier_error_kcal"] for r in ok if r.get("barrier_error_kcal") is not None]
        ),
        "mae_log10k": _mae([r["log10k_error"] for r in ok if r.get("log10k_error") is not None]),
        "log10k_from_dG": sum(r.get("log10k_basis") == "dG" for r in ok),
        "median_steps": _median([r["steps"] for r in records if "steps" in r]),
        "model_seconds": float(sum(r.get("model_seconds", 0.0) for r in records)),
        "median_search_wall_s": _median(
            [r["search_wall_s"] for r in records if "search_wall_s" in r]
        ),
        "total_wall_s": float(sum(r.get("total_wall_s", 0.0) for r in records)),
        "verdicts": dict(
            sorted(
                {
                    v: sum(r["verdict"] == v for r in records)
                    for v in {r["verdict"] for r in records}
                }.items()
            )
        ),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """One markdown table, one row per method."""
    lines = [
        "| method | success | 1 imag. (xTB) | 1 imag. (exact) | median RMSD Å | MAE ΔE‡ kcal/mol "
        "| MAE log10 k | median steps | median search s | model time s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        n = s["n"]
        k = f" ({s['log10k_from_dG']}/{s['success']} ΔG‡)" if s["success"] else ""
        exact = f"{s['exact_one_imaginary']}/{n}" if s["exact_checked"] else "–"
        lines.append(
            f"| {METHODS[method]} | {s['success']}/{n} | {s['xtb_one_imaginary']}/{n} | {exact} "
            f"| {_fmt(s['median_rmsd_A'], '.3f')} | {_fmt(s['mae_barrier_kcal'], '.2f')} "
            f"| {_fmt(s['mae_log10k'], '.2f')}{k} | {_fmt(s['median_steps'], '.0f')} "
            f"| {_fmt(s['median_search_wall_s'], '.1f')} | {s['model_seconds']:.1f} |"
        )
    return "\n".join(lines)


def format_rows(records: Sequence[dict[str, Any]]) -> str:
    """One markdown line per search (reaction, method)."""
    lines = [
        "| reaction | atoms | method | verdict | steps | imag. modes own/exact/xTB | RMSD Å "
        "| ΔE‡ err kcal/mol | log10 k err | model s | search s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        index = "/".join(
            "–" if r.get(k) is None else str(r[k])
            for k in ("saddle_index", "exact_saddle_index", "xtb_saddle_index")
        )
        lines.append(
            f"| {r['reaction']} | {r['atoms']} | {r['label']} | {r['verdict']} "
            f"| {r.get('steps', '–')} | {index} "
            f"| {_fmt(r.get('rmsd_A'), '.3f')} | {_fmt(r.get('barrier_error_kcal'), '+.2f')} "
            f"| {_fmt(r.get('log10k_error'), '+.2f')} ({r.get('log10k_basis', '–')}) "
            f"| {_fmt(r.get('model_seconds'), '.1f')} | {_fmt(r.get('search_wall_s'), '.1f')} |"
        )
    return "\n".join(lines)


def machine_info(threads: int) -> dict[str, Any]:
    """Platform, CPU model (``/proc/cpuinfo``), cores, threads, package versions and date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("torch", "mace-torch", "sella", "tblite", "ase", "hip-head"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": versions["torch"],
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def plot(summary: dict[str, dict[str, Any]], records: Sequence[dict[str, Any]], path: Path) -> None:
    """Bars of success and of one-imaginary-under-xTB per method; a box of steps per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    labels = [METHODS[m] for m in methods]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(methods))
    width = 0.38
    frac = [summary[m]["success"] / max(summary[m]["n"], 1) for m in methods]
    imag = [summary[m]["xtb_one_imaginary"] / max(summary[m]["n"], 1) for m in methods]
    ax1.bar(x - width / 2, frac, width, label="TS + IRC connects")
    ax1.bar(x + width / 2, imag, width, label="1 imaginary mode (xTB)")
    ax1.set_xticks(x, labels)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("fraction of reactions")
    ax1.legend(fontsize=8)
    n_reactions = max((summary[m]["n"] for m in methods), default=0)
    ax1.set_title(f"{n_reactions} held-out reactions")
    steps = [[r["steps"] for r in records if r["method"] == m and "steps" in r] for m in methods]
    ax2.boxplot([s if s else [np.nan] for s in steps])
    ax2.set_xticks(range(1, len(methods) + 1), labels)
    ax2.set_ylabel("Sella steps")
    ax2.set_title("optimiser steps per search")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    parser.add_argument("--quick", action="store_true", help="2 reactions (a smoke test)")
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="subset"
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
    sizes = held_out_reaction_ids(args.db)
    ids = (
        list(args.reaction)
        if args.reaction
        else pick_reactions(list(sizes), args.reactions, args.seed)
    )
    missing = [r for r in ids if r not in sizes]
    if missing:
        raise SystemExit(f"not test-split reactions of {args.db}: {', '.join(missing)}")
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


#: Per-search fields copied into the summary JSON.
_ROW_KEYS = (
    "reaction", "method", "atoms", "verdict", "success", "converged", "steps", "saddle_index",
    "exact_saddle_index", "xtb_saddle_index", "irc_connects", "rmsd_A", "dE_kcal", "dE_ref_kcal",
    "barrier_error_kcal", "dG_kcal", "dG_ref_kcal", "log10k_error", "log10k_basis",
    "model_seconds", "search_wall_s", "total_wall_s", "error",
)  # fmt: skip


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
