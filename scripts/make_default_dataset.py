"""Build hip-head's embedded default dataset (``data/default_xtb.db``).

One script, fixed seeds: for each molecule of :data:`MOLECULES` (H/C/N/O, up to 24 atoms):

1. an RDKit conformer (seed 0), relaxed with GFN2-xTB (tblite);
2. its xTB Hessian; thermal off-equilibrium frames along its Eckart normal modes at 300 K,
   600 K and 1200 K;
3. first-order saddles found with Sella (``order=1``, xTB Hessian) from the minimum displaced
   along (a) its two softest modes (conformational saddles) and (b) the two stiffer modes with
   the most hydrogen motion (bond-making/breaking saddles, e.g. proton transfers); each saddle
   has exactly one imaginary frequency;
4. near-transition-state frames around each saddle: 300 K thermal displacements along its real
   modes plus up to ±0.2 Å along its imaginary mode;
5. GFN2-xTB energy, forces and Hessian for every frame (``label_xtb``: analytic forces, central
   differences of the forces with h = 1e-3 Å, accuracy 0.01).

Molecules are split train/val/test (80/10/10 of the frames, whole molecules only, seed 0).
Rows store the Hessian as float32 (eV/Å²) to keep the file small; readers return float64.

Per-molecule results are cached under ``--work`` so an interrupted run resumes where it
stopped. Usage::

    python scripts/make_default_dataset.py --workers 2          # about 30 min on 2 cores
    python scripts/make_default_dataset.py --limit 3 --out /tmp/small.db   # a quick try
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: (name, SMILES): H/C/N/O molecules, 3 to 24 atoms with hydrogens.
MOLECULES: list[tuple[str, str]] = [
    ("water", "O"),
    ("hydrogen_cyanide", "C#N"),
    ("formaldehyde", "C=O"),
    ("ammonia", "N"),
    ("methanimine", "C=N"),
    ("hydrogen_peroxide", "OO"),
    ("methanol", "CO"),
    ("formic_acid", "OC=O"),
    ("formamide", "NC=O"),
    ("hydrazine", "NN"),
    ("methylamine", "CN"),
    ("ethylene", "C=C"),
    ("ethane", "CC"),
    ("acetonitrile", "CC#N"),
    ("acetaldehyde", "CC=O"),
    ("vinyl_alcohol", "C=CO"),
    ("formimidic_acid", "N=CO"),
    ("oxirane", "C1CO1"),
    ("ethanol", "CCO"),
    ("dimethyl_ether", "COC"),
    ("glyoxal", "O=CC=O"),
    ("acetic_acid", "CC(=O)O"),
    ("glycolaldehyde", "OCC=O"),
    ("urea", "NC(N)=O"),
    ("acetamide", "CC(N)=O"),
    ("n_methylformamide", "CNC=O"),
    ("nitromethane", "C[N+](=O)[O-]"),
    ("ethylamine", "CCN"),
    ("cyclopropane", "C1CC1"),
    ("acrolein", "C=CC=O"),
    ("malonaldehyde", "OC=CC=O"),
    ("ethylene_glycol", "OCCO"),
    ("ethanolamine", "NCCO"),
    ("acetone", "CC(C)=O"),
    ("glycine", "NCC(=O)O"),
    ("propane", "CCC"),
    ("butadiene", "C=CC=C"),
    ("furan", "c1ccoc1"),
    ("pyrrole", "c1cc[nH]c1"),
    ("imidazole", "c1c[nH]cn1"),
    ("propanol", "CCCO"),
    ("isopropanol", "CC(C)O"),
    ("n_methylacetamide", "CC(=O)NC"),
    ("alanine", "CC(N)C(=O)O"),
    ("benzene", "c1ccccc1"),
    ("pyridine", "c1ccncc1"),
    ("phenol", "Oc1ccccc1"),
    ("tetrahydrofuran", "C1CCOC1"),
    ("butane", "CCCC"),
    ("ethyl_acetate", "CCOC(C)=O"),
    ("glycerol", "OCC(O)CO"),
    ("cyclopentanone", "O=C1CCCC1"),
    ("succinic_acid", "OC(=O)CCC(=O)O"),
    ("aniline", "Nc1ccccc1"),
    ("benzaldehyde", "O=Cc1ccccc1"),
    ("toluene", "Cc1ccccc1"),
    ("tert_butanol", "CC(C)(C)O"),
    ("anisole", "COc1ccccc1"),
    ("salicylic_acid", "O=C(O)c1ccccc1O"),
    ("piperidine", "C1CCNCC1"),
    ("cyclohexane", "C1CCCCC1"),
    ("pentanol", "CCCCCO"),
    ("acetanilide", "CC(=O)Nc1ccccc1"),
    ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"),
]

TEMPERATURES_K = (300.0, 600.0, 1200.0)
FRAMES_PER_TEMPERATURE = 12
NEAR_TS_FRAMES = 14
NEAR_TS_TEMPERATURE_K = 300.0
REACTION_AMPLITUDE = 0.2  # Å along the imaginary mode
SADDLE_STEPS = 150
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_NAMES = ("train", "val", "test")
SEED = 0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "default_xtb.db"


def _hydrogen_modes(vib: Any, numbers: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` modes above 400 cm⁻¹ with the most hydrogen motion."""
    is_h = numbers == 1
    if not is_h.any():
        return []
    weight = (vib.modes[:, is_h, :] ** 2).sum(axis=(1, 2))  # modes have unit Cartesian norm
    candidates = [k for k in range(vib.n_modes) if 400.0 < vib.frequencies_cm1[k] < 2500.0]
    candidates.sort(key=lambda k: -weight[k])
    return candidates[:count]


def build_molecule(index: int, name: str, smiles: str) -> dict[str, Any]:
    """All labelled frames of one molecule (runs in a worker process).

    Returns:
        ``{"name", "smiles", "samples": [HessianSample], "seconds", "saddles": [cm⁻¹]}``.
    """
    from hip_head.finetune.labels import label_xtb
    from hip_head.finetune.sampling import (
        conformers_from_smiles,
        find_saddle,
        normal_mode_samples,
        relax_xtb,
    )
    from hip_head.vibrations import vibrational_analysis

    t0 = time.perf_counter()
    seed = SEED + 1000 * index
    start = conformers_from_smiles(smiles, n=1, seed=SEED)[0]
    minimum = relax_xtb(start, fmax=0.005, steps=500)
    minimum.info.update(kind="minimum")
    min_label = label_xtb(minimum)
    n3 = 3 * len(minimum)
    hessian = min_label.hessian.reshape(n3, n3)
    vib = vibrational_analysis(hessian, minimum)
    frames = normal_mode_samples(
        minimum, hessian, TEMPERATURES_K, FRAMES_PER_TEMPERATURE, seed=seed + 1
    )

    saddles = []
    if len(minimum) > 2:
        soft = find_saddle(minimum, hessian, modes=[0, 1], steps=SADDLE_STEPS)
        if soft is not None:
            saddles.append(soft)
        hard_modes = _hydrogen_modes(vib, minimum.get_atomic_numbers(), 2)
        hard = find_saddle(minimum, hessian, modes=hard_modes, displacement=0.5, steps=SADDLE_STEPS)
        if hard is not None and (
            soft is None or abs(hard.info["imaginary_cm1"] - soft.info["imaginary_cm1"]) > 1.0
        ):
            saddles.append(hard)
    else:  # diatomics/triatomics: the softest modes are the reaction (e.g. HCN -> HNC)
        found = find_saddle(minimum, hessian, n_modes=2, steps=SADDLE_STEPS)
        saddles += [found] if found is not None else []

    labelled = [(minimum, min_label)]
    for frame in frames:
        labelled.append((frame, None))
    for k, saddle in enumerate(saddles):
        ts_label = label_xtb(saddle)
        labelled.append((saddle, ts_label))
        near = normal_mode_samples(
            saddle,
            ts_label.hessian.reshape(n3, n3),
            (NEAR_TS_TEMPERATURE_K,),
            NEAR_TS_FRAMES,
            seed=seed + 100 + k,
            reaction_amplitude=REACTION_AMPLITUDE,
        )
        for frame in near:
            frame.info.update(kind="near_saddle", saddle_imaginary_cm1=saddle.info["imaginary_cm1"])
            labelled.append((frame, None))

    samples = []
    for frame, label in labelled:
        if label is None:
            try:
                label = label_xtb(frame)
            except Exception as exc:  # noqa: BLE001 - an SCF failure drops that frame only
                print(f"{name}: frame dropped ({exc})", file=sys.stderr, flush=True)
                continue
        label.meta.update(molecule=name, smiles=smiles, kind=frame.info["kind"])
        for key in ("temperature_K", "imaginary_cm1", "saddle_imaginary_cm1"):
            if key in frame.info:
                label.meta[key] = float(frame.info[key])
        samples.append(label)
    return {
        "name": name,
        "smiles": smiles,
        "samples": samples,
        "saddles": [float(s.info["imaginary_cm1"]) for s in saddles],
        "seconds": time.perf_counter() - t0,
    }


def write_db(samples: list[Any], out: Path) -> None:
    """Write labelled samples (``meta`` with split/molecule/kind) to ``out`` atomically,
    Hessians as float32."""
    from hip_head.finetune.data import write_ase_db

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_ase_db(
        samples,
        tmp,
        hessian_dtype=np.float32,
        key_value_pairs=lambda s: {
            "split": s.meta["split"],
            "molecule": s.meta["molecule"],
            "kind": s.meta["kind"],
        },
    )
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .db file")
    parser.add_argument("--work", type=Path, default=Path("build/default_dataset"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N molecules only")
    args = parser.parse_args(argv)

    from hip_head.finetune.data import split_by_molecule
    from hip_head.finetune.jobs import run_cached

    molecules = MOLECULES[: args.limit]
    results = run_cached(
        dict(enumerate(molecules)),
        build_molecule,
        args.work,
        args.workers,
        describe=lambda r: f", saddles {['%.0fi' % -c for c in r['saddles']]}",
        stems={i: f"{i:03d}_{name}" for i, (name, _) in enumerate(molecules)},
    )
    samples = [s for r in results for s in r["samples"]]
    keys = [s.meta["molecule"] for s in samples]
    split_of: dict[int, str] = {}
    for name, indices in zip(
        SPLIT_NAMES, split_by_molecule(keys, SPLIT_FRACTIONS, seed=SEED), strict=True
    ):
        for i in indices:
            split_of[i] = name
    for i, sample in enumerate(samples):
        sample.meta["split"] = split_of[i]

    write_db(samples, args.out)
    summary = {
        "frames": len(samples),
        "molecules": len(results),
        "bytes": args.out.stat().st_size,
        "kinds": {
            k: sum(s.meta["kind"] == k for s in samples)
            for k in sorted(set(s.meta["kind"] for s in samples))
        },
        "splits": {n: sum(v == n for v in split_of.values()) for n in SPLIT_NAMES},
        "label_seconds": [float(s.meta["seconds"]) for s in samples],
        "atoms": [int(s.num_atoms) for s in samples],
        "saddles": {r["name"]: r["saddles"] for r in results},
        "build_seconds": {r["name"]: r["seconds"] for r in results},
    }
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"wrote {args.out}: {summary['frames']} frames, {summary['molecules']} molecules, "
        f"{summary['bytes'] / 1e6:.1f} MB, kinds {summary['kinds']}, splits {summary['splits']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
