"""Build hip-head's reaction dataset (``data/reactions_xtb.db``) with GFN2-xTB.

Reactant molecules (H/C/N/O, neutral, at most 8 heavy atoms), three pools:

- :data:`NEW_MOLECULES`: small isomers in none of the project's other sets (the default
  dataset, the extra set, the backbone's pretraining data); the only source of the val and
  test reactants;
- the default dataset's training molecules with at most :data:`MAX_HEAVY` heavy atoms;
- the extra set's molecules with at most :data:`MAX_HEAVY_EXTRA` heavy atoms (first
  :data:`EXTRA_COUNT` in that set's shuffled order).

Each molecule goes through :func:`hip_head.finetune.reaction_data.build_reactions` (saddle
searches, descents both ways, reaction frames, xTB labels); per-molecule results are cached
under ``--work`` so an interrupted build resumes. Reactions found from two molecules are kept
once (:func:`~hip_head.finetune.reactions.deduplicate`).

Split by reactant molecule: the new molecules are shuffled (seed 0) into
:data:`N_TEST` test, :data:`N_VAL` val and the rest train; all other reactants are train.
Then the test split is made disjoint from everything trained on: a test reaction with an end
(connectivity key) that is a training molecule or a training reaction's end moves to val, and
so does a train reaction with an end that is a test molecule. Every move is recorded in the
report ``<out>.json`` beside the reactions, attempts and failures.

Of each reaction's thermal frames, :data:`THERMAL_KEPT` are stored (seeded choice), to bound
the file size. Rows store Hessians as float32 upper triangles (readers return (3N, 3N)
float64 eV/Å²) in an SQLite file with 1 kB pages.
Usage::

    python scripts/make_reaction_dataset.py --workers 2          # about 2 h on 2 cores
    python scripts/make_reaction_dataset.py --limit 2 --out /tmp/r.db   # a quick try
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_dataset import MOLECULES, SEED  # noqa: E402

#: New reactant molecules: not in the default dataset, the extra set or the pretraining data
#: (checked by connectivity in the tests).
NEW_MOLECULES: tuple[str, ...] = (
    "C=C=O", "C=C=C", "C1OC1C", "CN=C", "N=NO", "C1CCC1", "C1CC=C1", "CC(O)O", "CN=C=O",
    "N=C=O", "C1=CCC=C1", "C1CN1", "C1CNC1", "C1COC1", "NC=CC=O", "OC=CO", "C=C(C)O",
    "CC(N)=N", "C1=CC1", "C1=NC1", "C1OO1", "C1NO1", "O=C1CC1", "O=C1CO1", "C1=COC1",
    "CC(=C)C=O", "CC(=O)CC=O", "C=C(O)C=O", "CC#CC", "CC#CO", "C#CCC#C", "O=CCC=O", "OCCC=O",
    "CC(O)C=O", "CN1CC1", "C1CCN1C", "OC1CCC1", "C=C1CC1", "C1CC2CC12", "C=CCC=C", "COCC=O",
    "C=NO", "CC=NO", "NC(N)=N", "CC(=N)O",
)  # fmt: skip
#: Discovery settings of the shipped build: fewer starts than the library's defaults, and
#: fewer still from molecule :data:`LATE_FROM` on (the larger molecules of the default
#: dataset), to fit the build into about 100 minutes on 2 cores. The first three molecules
#: (C1OC1C, CN1CC1, N=NO) were built with the library defaults and molecule 37 (CC(=N)O) with
#: 4 random starts, 4 hydrogen moves and 150 s; every cache file records the settings it was
#: built with.
SETTINGS = {"n_random": 5, "n_hydrogen_moves": 6, "molecule_seconds": 240.0}
LATE_SETTINGS = {"n_random": 3, "n_hydrogen_moves": 4, "molecule_seconds": 90.0}
LATE_FROM = 34
#: Reactant molecules built by default (the pool's first: all test, val and new train
#: molecules, the default dataset's training molecules, then the extra set's).
DEFAULT_LIMIT = 95
#: Thermal frames kept per reaction (seeded choice among those labelled), around the TS and
#: around the two minima together (all of them in the shipped build; lower it to bound the
#: file size, about 3.5 kB a frame).
THERMAL_KEPT = {"ts": 24, "minimum": 8}
N_TEST = 22
N_VAL = 8
MAX_HEAVY = 8
MAX_HEAVY_EXTRA = 5
EXTRA_COUNT = 40
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "reactions_xtb.db"


def heavy_atoms(smiles: str) -> int:
    """Number of non-hydrogen atoms of a SMILES."""
    from rdkit import Chem

    return Chem.MolFromSmiles(smiles).GetNumHeavyAtoms()


def reactant_pool() -> list[tuple[str, str]]:
    """``(smiles, planned split)`` of every reactant, in build order (test and val first)."""

    from hip_head.assets import dataset_path
    from hip_head.finetune.data import AseDbDataset

    order = list(NEW_MOLECULES)
    np.random.default_rng(SEED).shuffle(order)
    pool = [(s, "test") for s in order[:N_TEST]]
    pool += [(s, "val") for s in order[N_TEST : N_TEST + N_VAL]]
    pool += [(s, "train") for s in order[N_TEST + N_VAL :]]
    default = AseDbDataset(dataset_path("default_xtb.db"))
    splits = zip(default.column("molecule"), default.column("split"))
    train_names = {name for name, split in splits if split == "train"}
    pool += [
        (s, "train") for name, s in MOLECULES if name in train_names and heavy_atoms(s) <= MAX_HEAVY
    ]
    pool += [(s, "train") for s in small_extra_molecules()[:EXTRA_COUNT]]
    return pool


def training_keys() -> set[str]:
    """Connectivity keys of every molecule trained on outside this set (default train, extra)."""
    from make_extra_dataset import enumerate_molecules

    from hip_head.assets import dataset_path
    from hip_head.finetune.data import AseDbDataset
    from hip_head.finetune.molgraph import graph_key_of_smiles

    default = AseDbDataset(dataset_path("default_xtb.db"))
    smiles_of_name = dict(MOLECULES)
    names = {m for m, s in zip(default.column("molecule"), default.column("split")) if s == "train"}
    keys = {graph_key_of_smiles(smiles_of_name[n]) for n in names}
    return keys | {graph_key_of_smiles(s) for s in enumerate_molecules()}


def split_keys(reactions: list[dict[str, Any]], split: str) -> set[str]:
    """Connectivity keys of the reactants and both ends of every reaction in ``split``
    (summaries with ``"smiles"``, ``"end_keys"`` and ``"split"``)."""
    from hip_head.finetune.molgraph import graph_key_of_smiles

    keys: set[str] = set()
    for r in reactions:
        if r["split"] == split:
            keys |= {graph_key_of_smiles(r["smiles"]), *r["end_keys"]}
    return keys


def small_extra_molecules() -> list[str]:
    """The extra set's molecules with at most :data:`MAX_HEAVY_EXTRA` heavy atoms, in that
    set's shuffled order (the reactants both reaction builds take from it)."""
    from make_extra_dataset import enumerate_molecules

    return [s for s in enumerate_molecules() if heavy_atoms(s) <= MAX_HEAVY_EXTRA]


def assign_splits(
    reactions: list[dict[str, Any]], planned: dict[str, str], outside_train: set[str]
) -> list[dict[str, str]]:
    """Set ``r["split"]`` on each reaction summary; returns the moves made.

    Args:
        reactions: summaries with ``"smiles"`` (the reactant) and ``"end_keys"``.
        planned: reactant SMILES -> planned split.
        outside_train: connectivity keys of molecules trained on elsewhere.

    Returns:
        One ``{"reaction", "from", "to", "why"}`` per move.
    """
    moves = []
    for r in reactions:
        r["split"] = planned[r["smiles"]]
    train_keys = set(outside_train) | split_keys(reactions, "train")
    for r in reactions:
        if r["split"] == "test" and set(r["end_keys"]) & train_keys:
            r["split"] = "val"
            moves.append({"reaction": r["id"], "from": "test", "to": "val",
                          "why": "an end is a molecule trained on"})  # fmt: skip
    test_keys = split_keys(reactions, "test")
    for r in reactions:
        if r["split"] == "train" and set(r["end_keys"]) & test_keys:
            r["split"] = "val"
            moves.append({"reaction": r["id"], "from": "train", "to": "val",
                          "why": "an end is a test molecule"})  # fmt: skip
    return moves


def thin_thermal(frames: list[Any], rng: np.random.Generator) -> list[Any]:
    """One reaction's frames with at most :data:`THERMAL_KEPT` thermal frames per ``near``
    (seeded choice), all other kinds kept, in their original order."""
    keep = []
    for near, limit in THERMAL_KEPT.items():
        idx = [i for i, f in enumerate(frames)
               if f.meta["kind"] == "thermal" and f.meta.get("near") == near]  # fmt: skip
        keep += sorted(rng.choice(idx, size=min(limit, len(idx)), replace=False).tolist())
    return [f for i, f in enumerate(frames) if f.meta["kind"] != "thermal" or i in set(keep)]


def parse_build_arguments(
    argv: list[str] | None, description: str, out: Path, work: Path, limit: int
) -> argparse.Namespace:
    """The command line of a reaction build: ``--out``, ``--work``, ``--workers``, ``--limit``
    (first N reactant molecules) and ``--cached-only``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=out, help="output .db file")
    parser.add_argument("--work", type=Path, default=work)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=limit, help="first N molecules")
    parser.add_argument(
        "--cached-only", action="store_true", help="assemble the molecules cached so far"
    )
    return parser.parse_args(argv)


def build_molecules(
    jobs: dict[int, tuple[Any, ...]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Run :func:`~hip_head.finetune.reaction_data.build_reactions` for each job (cached under
    ``args.work``; only the cached ones with ``args.cached_only``); the results in job order."""
    from hip_head.finetune.jobs import run_cached
    from hip_head.finetune.reaction_data import build_reactions

    if args.cached_only:
        jobs = {i: job for i, job in jobs.items() if (args.work / f"{i:03d}.pkl").is_file()}
    return run_cached(
        jobs,
        build_reactions,
        args.work,
        args.workers,
        describe=lambda r: f", {len(r['reactions'])} reactions",
    )


def write_reaction_db(samples: list[Any], out: Path) -> None:
    """Write reaction frames (``meta``: ``split``, ``smiles``, ``kind``, ``reaction``) as a
    compact database with the reaction columns."""
    from hip_head.finetune.data import write_compact_db

    write_compact_db(
        samples,
        out,
        key_value_pairs=lambda s: {
            "split": s.meta["split"],
            "molecule": s.meta["smiles"],
            "kind": s.meta["kind"],
            "reaction": s.meta["reaction"],
        },
    )


def molecule_report(result: dict[str, Any]) -> dict[str, Any]:
    """One molecule's entry of a build report: attempts, dropped frames, failure, seconds and
    the number of reactions found."""
    keys = ("smiles", "attempts", "dropped_frames", "failure", "seconds")
    return {k: result[k] for k in keys} | {"reactions": len(result["reactions"])}


def main(argv: list[str] | None = None) -> int:
    args = parse_build_arguments(
        argv, __doc__.splitlines()[0], DEFAULT_OUT, Path("build/reaction_dataset"), DEFAULT_LIMIT
    )
    from hip_head.finetune.reactions import REACTION_KINDS, ReactionSettings, deduplicate

    t0 = time.perf_counter()
    pool = reactant_pool()[: args.limit]
    planned = dict(pool)
    jobs = {
        i: (smiles, ReactionSettings(**(SETTINGS if i < LATE_FROM else LATE_SETTINGS)), SEED)
        for i, (smiles, _) in enumerate(pool)
    }
    results = build_molecules(jobs, args)
    index_of = {smiles: i for i, (smiles, _) in enumerate(pool)}  # reaction ids: "<i>:<k>"
    summaries = []
    for result in results:
        for summary in result["reactions"]:
            rid = f"{index_of[result['smiles']]}:{summary['index']}"
            summaries.append(summary | {"smiles": result["smiles"], "id": rid})
    kept, dropped = deduplicate(
        [s["end_keys"] for s in summaries], [s["ts_energy_eV"] for s in summaries]
    )
    distinct = [summaries[i] for i in kept]
    moves = assign_splits(distinct, planned, training_keys())
    split_of = {s["id"]: s["split"] for s in distinct}

    samples = []
    rng = np.random.default_rng(SEED)
    for result in results:
        by_reaction: dict[str, list[Any]] = {}
        for sample in result["samples"]:
            rid = f"{index_of[result['smiles']]}:{sample.meta['reaction']}"
            if rid in split_of:
                sample.meta.update(reaction=rid, split=split_of[rid])
                by_reaction.setdefault(rid, []).append(sample)
        for frames in by_reaction.values():
            samples += thin_thermal(frames, rng)
    write_reaction_db(samples, args.out)
    report = {
        "frames": len(samples),
        "reactions": distinct,
        "duplicates": [
            {"reaction": summaries[i]["id"], "same_as": summaries[j]["id"]} for i, j in dropped
        ],  # fmt: skip
        "split_moves": moves,
        "molecules": [
            molecule_report(r) | {"planned_split": planned[r["smiles"]]} for r in results
        ],
        "bytes": args.out.stat().st_size,
        "build_cpu_seconds": sum(r["seconds"] for r in results),
        "assemble_seconds": time.perf_counter() - t0,
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    kinds = {k: sum(s.meta["kind"] == k for s in samples) for k in REACTION_KINDS}
    splits = {k: sum(s["split"] == k for s in distinct) for k in ("train", "val", "test")}
    print(
        f"wrote {args.out}: {len(distinct)} reactions ({len(dropped)} duplicates dropped, "
        f"splits {splits}) from {len(results)} molecules, {len(samples)} frames {kinds}, "
        f"{report['bytes'] / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
