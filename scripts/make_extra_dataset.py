"""Build hip-head's extra Hessian fine-tuning set (``data/extra_xtb.db``).

The default dataset (``scripts/make_default_dataset.py``) holds 64 molecules; the shipped
backbone was pretrained on the energies and forces of its 51 training molecules. A HIP head
fine-tuned on those 51 fits them to ~0.12 eV/Å² but generalises to unseen molecules at ~0.34:
what it lacks is chemical variety. This script adds many more, cheaply labelled, molecules
that neither the backbone nor the default dataset has seen. It plays the part of a chemist's
own Hessian data in the demo (``data.train: [default, extra]``).

Molecules: every pair of the monovalent groups :data:`GROUPS` joined by a single bond
(RDKit ``molzip``), H/C/N/O, 3 to 24 atoms with hydrogens, minus every molecule of the
default dataset (canonical SMILES, so the default test molecules stay unseen), in a fixed
shuffled order; the first ``--molecules`` are built.

For each molecule (fixed seeds): an RDKit conformer relaxed with GFN2-xTB; its xTB Hessian;
thermal off-equilibrium frames along its Eckart normal modes at 300 K, 600 K and 1200 K
(:data:`FRAMES_PER_TEMPERATURE` each); GFN2-xTB energy, forces and Hessian for every frame
(``label_xtb``, as the default dataset). No saddle searches: they cost most of the default
dataset's build time. Every row is tagged ``split = "train"``.

Per-molecule results are cached under ``--work``; an interrupted run resumes. Usage::

    python scripts/make_extra_dataset.py --workers 2            # about 40 min on 2 cores
    python scripts/make_extra_dataset.py --molecules 4 --out /tmp/extra.db   # a quick try
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
from make_default_dataset import (  # noqa: E402
    MOLECULES,
    SEED,
    TEMPERATURES_K,
    write_db,
)

#: Monovalent groups (SMILES, attached through their first atom).
GROUPS: tuple[str, ...] = (
    "C", "CC", "C=C", "C#C", "C#N", "C=O", "O", "N", "OC", "NC", "N(C)C", "C(=O)O",
    "C(=O)N", "C(=O)C", "C(=O)OC", "c1ccccc1", "C1CC1", "CO", "CN", "CC#N", "C(C)C",
    "NC=O", "OC=O", "C=N", "[N+](=O)[O-]", "c1ccncc1", "c1ccoc1", "C1CCOC1", "N=O",
    "C(C)(C)C", "NO", "C=CC",
)  # fmt: skip
MAX_ATOMS = 24
FRAMES_PER_TEMPERATURE = 3
DEFAULT_MOLECULES = 10_000  # all of them
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "extra_xtb.db"


def enumerate_molecules() -> list[str]:
    """Canonical SMILES of every new group pair, in a fixed shuffled order (seed 0).

    Returns:
        SMILES strings, none of them a molecule of the default dataset.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    known = {Chem.MolToSmiles(Chem.MolFromSmiles(s)) for _, s in MOLECULES}
    found: set[str] = set()
    for i, a in enumerate(GROUPS):
        for b in GROUPS[i:]:
            mol = Chem.molzip(Chem.MolFromSmiles(f"[*:1]{a}.[*:1]{b}"))
            Chem.SanitizeMol(mol)
            smiles = Chem.MolToSmiles(mol)
            n_atoms = Chem.AddHs(mol).GetNumAtoms()
            if smiles not in known and 3 <= n_atoms <= MAX_ATOMS:
                found.add(smiles)
    ordered = sorted(found)
    np.random.default_rng(SEED).shuffle(ordered)
    return ordered


def build_molecule(index: int, smiles: str) -> dict[str, Any]:
    """All labelled frames of one molecule (runs in a worker process).

    Returns:
        ``{"name", "smiles", "samples": [HessianSample], "seconds"}``.
    """
    from hip_head.finetune.labels import label_xtb
    from hip_head.finetune.sampling import conformers_from_smiles, normal_mode_samples, relax_xtb

    t0 = time.perf_counter()
    start = conformers_from_smiles(smiles, n=1, seed=SEED)[0]
    minimum = relax_xtb(start, fmax=0.005, steps=500)
    minimum.info.update(kind="minimum")
    min_label = label_xtb(minimum)
    n3 = 3 * len(minimum)
    frames = normal_mode_samples(
        minimum,
        min_label.hessian.reshape(n3, n3),
        TEMPERATURES_K,
        FRAMES_PER_TEMPERATURE,
        seed=SEED + 1000 * index + 1,
    )
    labelled = [(minimum, min_label)]
    for frame in frames:
        try:
            labelled.append((frame, label_xtb(frame)))
        except Exception as exc:  # noqa: BLE001 - an SCF failure drops that frame only
            print(f"{smiles}: frame dropped ({exc})", file=sys.stderr, flush=True)
    samples = []
    for frame, sample in labelled:  # each label with its own frame, also after a drop
        sample.meta.update(molecule=smiles, smiles=smiles, kind=frame.info["kind"], split="train")
        if "temperature_K" in frame.info:
            sample.meta["temperature_K"] = float(frame.info["temperature_K"])
        samples.append(sample)
    return {
        "name": smiles,
        "smiles": smiles,
        "samples": samples,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .db file")
    parser.add_argument("--work", type=Path, default=Path("build/extra_dataset"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--molecules", type=int, default=DEFAULT_MOLECULES)
    args = parser.parse_args(argv)

    molecules = enumerate_molecules()[: args.molecules]
    from hip_head.finetune.jobs import run_cached

    results = run_cached(
        {i: (smiles,) for i, smiles in enumerate(molecules)},
        build_molecule,
        args.work,
        args.workers,
    )
    samples = [s for r in results for s in r["samples"]]
    write_db(samples, args.out)
    summary = {
        "frames": len(samples),
        "molecules": len(results),
        "bytes": args.out.stat().st_size,
        "smiles": [r["smiles"] for r in results],
        "atoms": [int(s.num_atoms) for s in samples],
        "build_seconds": {r["name"]: r["seconds"] for r in results},
    }
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"wrote {args.out}: {summary['frames']} frames, {summary['molecules']} molecules, "
        f"{summary['bytes'] / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
