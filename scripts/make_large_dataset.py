"""Build hip-head's unseen-molecule check set (``data/unseen_large_xtb.db``) with GFN2-xTB.

Molecules of 15 to 26 atoms (H/C/N/O) that appear in no other set of the project (default,
extra, reactions, the backbone's training data; compared by connectivity), most larger than
the reaction set's molecules. Per molecule (fixed seeds): an RDKit conformer relaxed with
GFN2-xTB (``kind = "minimum"``) and :data:`FRAMES_PER_TEMPERATURE` normal-mode frames at 300 K
and at 1000 K (``kind = "thermal"``), each labelled with xTB energy, forces and Hessian. Every
row has ``split = "test"``: this set is for evaluation only, never for training.

Usage::

    python scripts/make_large_dataset.py --workers 2      # about 5 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_dataset import SEED  # noqa: E402

#: Unseen molecules, 15-26 atoms with hydrogens.
MOLECULES: tuple[str, ...] = (
    "CCCCCC", "OCCCCO", "CCOCCOC", "NCCCCN", "CC(=O)OCC(C)C", "O=C(O)CCCC(=O)O",
    "Cc1ccc(O)cc1", "c1ccc2ccccc2c1", "CCCCCCCC", "CCN(CC)CC", "COc1ccc(C=O)cc1",
    "CCCCCCO", "CC(C)C(N)C(=O)O", "CC1=CC(=O)CC(C)(C)C1", "Nc1ccc(O)cc1", "CCCCC(=O)OC",
    "CC(C)Cc1ccccc1", "CCOc1ccccc1",
)  # fmt: skip
FRAMES_PER_TEMPERATURE = 4
TEMPERATURES_K = (300.0, 1000.0)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "unseen_large_xtb.db"


def build_molecule(index: int, smiles: str) -> dict[str, Any]:
    """The labelled minimum and thermal frames of one molecule (runs in a worker)."""
    from hip_head.finetune.labels import label_xtb
    from hip_head.finetune.sampling import conformers_from_smiles, normal_mode_samples, relax_xtb

    t0 = time.perf_counter()
    minimum = relax_xtb(conformers_from_smiles(smiles, n=1, seed=SEED)[0], fmax=0.005, steps=800)
    minimum.info["kind"] = "minimum"
    first = label_xtb(minimum)
    n3 = 3 * len(minimum)
    frames = normal_mode_samples(
        minimum, first.hessian.reshape(n3, n3), TEMPERATURES_K, FRAMES_PER_TEMPERATURE,
        seed=SEED + 1000 * index + 7,
    )  # fmt: skip
    labelled = [(minimum, first)] + [(f, label_xtb(f)) for f in frames]
    samples = []
    for frame, sample in labelled:
        kind = "minimum" if frame is minimum else "thermal"
        sample.meta.update(molecule=smiles, smiles=smiles, kind=kind, split="test")
        if "temperature_K" in frame.info:
            sample.meta["temperature_K"] = float(frame.info["temperature_K"])
        samples.append(sample)
    return {"name": smiles, "samples": samples, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=Path("build/large_dataset"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from hip_head.finetune.data import write_compact_db
    from hip_head.finetune.jobs import run_cached

    results = run_cached(dict(enumerate((s,) for s in MOLECULES)), build_molecule, args.work,
                         args.workers)  # fmt: skip
    samples = [s for r in results for s in r["samples"]]
    write_compact_db(
        samples, args.out,
        key_value_pairs=lambda s: {k: s.meta[k] for k in ("split", "molecule", "kind")},
    )  # fmt: skip
    print(f"wrote {args.out}: {len(samples)} frames of {len(results)} molecules")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
