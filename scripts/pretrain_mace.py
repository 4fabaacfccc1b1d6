"""Pretrain hip-head's embedded backbone: a small ScaleShiftMACE on the default dataset.

No foundation-model weights can be downloaded where hip-head is developed and tested, so the
repository ships a small MACE trained by this script as a stand-in for one
(``hip_head/assets/mace_pretrained.model``, see ``docs/pretrained.md``):

1. the ``train`` / ``val`` / ``test`` rows of the default dataset (``data/default_xtb.db``,
   GFN2-xTB energies and forces; ``--db`` takes several databases, each split then being the
   union of their rows) are written as extended XYZ files
   (``REF_energy`` / ``REF_forces``) under ``--work`` (default ``build/pretrain_mace``);
2. MACE's own trainer (``mace_run_train`` of mace-torch, run as a subprocess with a fixed seed)
   trains a ScaleShiftMACE on energies and forces of the train split, in MACE's two stages
   (forces-heavy loss at lr 0.01, then ``--stage-two-epochs`` with an energy-heavy loss at
   lr 0.001); the val split picks the checkpoint (MACE keeps the one with the lowest
   validation loss of stage two; EMA weights); the test split is only evaluated. E0s are
   MACE's ``average`` (a least-squares fit of the train energies on the composition). MACE
   saves the whole module with ``torch.save`` (the way its foundation models are
   distributed), in float64 here; that ``.model`` file is copied to ``--out`` and rewritten
   in hip-head's safe backbone format (:func:`hip_head.serialization.convert`: this run wrote
   the pickle, so it is trusted here; the result opens without unpickling);
3. the saved file is reloaded with :func:`hip_head.serialization.load_backbone`, wrapped with
   ``hip_head.wrap`` and evaluated: energy MAE (meV/atom) and force MAE (meV/Å) on each split,
   and the Hessian metrics of the backbone's own autograd Hessian against the xTB Hessians on
   the test split (``hip_head.finetune.losses.hessian_metrics``: the baseline a HIP head must
   beat). Settings and metrics go to ``--out`` with the suffix ``.json``.

``--max-minutes`` caps the training time: when it runs out the trainer is stopped and rerun
with ``--restart_latest`` and no epochs left, so MACE itself reloads the best checkpoint and
saves the model the usual way (the json records ``stopped_by_time_limit``; the result then
depends on the machine's speed, the default epoch count alone does not).

Threads: the trainer runs with ``--threads`` (default 1) torch/OpenMP threads. On the shared
2-core development machine two threads were 10-15 times *slower* than one (OpenMP threads
spin-waiting on cores busy with other jobs); results do not depend on the thread count.

Steps 1 and 2 up to the copy to ``--out`` live in ``scripts/pretrain_mace_train.py``
(dataset export, ``mace_run_train`` options, time limit and checkpoint handling); this module
holds the CLI, the conversion and the evaluation.

Usage::

    .venv/bin/python scripts/pretrain_mace.py                      # the shipped model
    .venv/bin/python scripts/pretrain_mace.py --db /tmp/small.db --out /tmp/m.model --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling pretrain_mace_train

from pretrain_mace_train import ROOT, SPLITS, log, read_split, train  # noqa: E402


# -------------------------------------------------------------------------------- evaluation
def read_hessians(frames: list[Any]) -> list[np.ndarray]:
    """xTB Hessians (3N, 3N) float64, eV/Å², of frames read by :func:`read_split` (any
    storage layout the dataset reader knows, the float32 upper triangle included)."""
    from hip_head.finetune.data import AseDbDataset

    readers: dict[str, Any] = {}
    out = []
    for atoms in frames:
        path = atoms.info["db"]
        if path not in readers:
            reader = AseDbDataset(path)
            readers[path] = (reader, {rid: i for i, rid in enumerate(reader._ids)})
        reader, index_of = readers[path]
        out.append(reader[index_of[atoms.info["row_id"]]].hessian_matrix())
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def evaluate_energy_forces(hip: Any, frames: list[Any], batch: int = 32) -> dict[str, float]:
    """Energy MAE/RMSE per atom (meV/atom) and force-component MAE/RMSE (meV/Å)."""
    de, df = [], []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        for atoms, out in zip(chunk, hip.predict(chunk, compute_hessian=False)):
            de.append((out["energy"] - atoms.info["REF_energy"]) / len(atoms))
            df.append((out["forces"] - atoms.arrays["REF_forces"]).ravel())
    de_a, df_a = np.asarray(de), np.concatenate(df)
    return {
        "num_frames": len(frames),
        "num_atoms": int(sum(len(a) for a in frames)),
        "energy_mae_mev_per_atom": 1e3 * float(np.mean(np.abs(de_a))),
        "energy_rmse_mev_per_atom": 1e3 * float(np.sqrt(np.mean(de_a**2))),
        "forces_mae_mev_per_ang": 1e3 * float(np.mean(np.abs(df_a))),
        "forces_rmse_mev_per_ang": 1e3 * float(np.sqrt(np.mean(df_a**2))),
    }


def evaluate_hessians(hip: Any, frames: list[Any], batch: int = 8) -> dict[str, Any]:
    """hessian_metrics of the backbone's autograd Hessian vs xTB, means over frames.

    Frames of one molecule (same size) are batched: a batch costs 3N VJPs, not 3N per frame.
    """
    import torch

    from hip_head.finetune.losses import hessian_metrics

    targets = read_hessians(frames)
    by_molecule: dict[tuple[str, int], list[int]] = {}
    for i, atoms in enumerate(frames):
        by_molecule.setdefault((atoms.info["molecule"], len(atoms)), []).append(i)
    preds: dict[int, np.ndarray] = {}
    for indices in by_molecule.values():
        for start in range(0, len(indices), batch):
            chunk = indices[start : start + batch]
            for i, out in zip(chunk, hip.predict([frames[i] for i in chunk])):
                preds[i] = out["hessian"]
    per_frame: list[dict[str, float]] = []
    for i, (atoms, target) in enumerate(zip(frames, targets)):
        per_frame.append(
            hessian_metrics(
                torch.from_numpy(preds[i].ravel()),
                torch.from_numpy(target.ravel()),
                [len(atoms)],
                torch.from_numpy(atoms.positions),
                torch.from_numpy(atoms.numbers),
            )
        )
    keys = [k for k in per_frame[0] if k != "num_structures"]
    out: dict[str, Any] = {k: float(np.nanmean([m[k] for m in per_frame])) for k in keys}
    out["num_frames"] = len(frames)
    by_kind: dict[str, list[float]] = {}
    for atoms, m in zip(frames, per_frame):
        by_kind.setdefault(atoms.info["kind"], []).append(m["hessian_mae"])
    out["hessian_mae_by_kind"] = {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}
    return out


def model_summary(model: Any) -> dict[str, Any]:
    """Settings read back from the trained module."""
    import torch

    summary: dict[str, Any] = {
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "r_max": float(model.r_max),
        "num_interactions": int(model.num_interactions),
        "atomic_numbers": [int(z) for z in model.atomic_numbers],
        "hidden_irreps": str(model.products[0].linear.irreps_out),
        "avg_num_neighbors": float(model.interactions[0].avg_num_neighbors),
    }
    e0 = model.atomic_energies_fn.atomic_energies.detach().cpu().reshape(-1)
    summary["E0s_eV"] = {int(z): float(e) for z, e in zip(model.atomic_numbers, e0)}
    scale_shift = getattr(model, "scale_shift", None)
    if scale_shift is not None:
        summary["scale_eV"] = float(torch.as_tensor(scale_shift.scale).reshape(-1)[0])
        summary["shift_eV"] = float(torch.as_tensor(scale_shift.shift).reshape(-1)[0])
    return summary


# -------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--db",
        type=Path,
        nargs="+",
        default=[ROOT / "data/default_xtb.db"],
        help="databases with a split column; each split is the union of their rows",
    )
    p.add_argument("--out", type=Path, default=ROOT / "hip_head/assets/mace_pretrained.model")
    p.add_argument("--work", type=Path, default=ROOT / "build/pretrain_mace")
    p.add_argument("--epochs", type=int, default=24, help="mace_run_train max_num_epochs")
    p.add_argument(
        "--stage-two-epochs",
        type=int,
        default=8,
        help="the last N epochs are MACE's stage two (start_swa = epochs - N)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop training after this many minutes and keep the best checkpoint so far",
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (OMP_NUM_THREADS of the trainer); on a shared 2-core machine 1 "
        "is much faster than 2, which oversubscribes the cores",
    )
    p.add_argument(
        "--hessian-frames",
        type=int,
        default=None,
        help="evaluate the autograd Hessian on the first N test frames only (default all)",
    )
    p.add_argument(
        "--description",
        default="small ScaleShiftMACE pretrained on energies and forces of the train split of "
        "hip-head's default GFN2-xTB dataset (a stand-in for a foundation model); see "
        "docs/pretrained.md",
        help="the description stored in the json",
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this MACE model's weights (mace_run_train --foundation_model; same "
        "architecture, plain fine-tuning without a replay head) instead of random weights",
    )
    p.add_argument("--lr", type=float, default=None, help="stage-one learning rate")
    p.add_argument("--quick", action="store_true", help="3 epochs (a smoke test)")
    p.add_argument(
        "--skip-training", action="store_true", help="only re-evaluate an existing --out model"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.stage_two_epochs = 3, 1
    if not 1 <= args.stage_two_epochs < args.epochs:
        p.error("--stage-two-epochs must be at least 1 and less than --epochs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, out = args.work.resolve(), args.out.resolve()
    json_path = out.with_suffix(".json")
    t_start = time.time()

    frames = {split: read_split(args.db, split) for split in SPLITS}
    for split in SPLITS:
        log(f"{split}: {len(frames[split])} frames, {sum(map(len, frames[split]))} atoms")
        if not frames[split]:
            raise SystemExit(f"{args.db}: no rows with split={split!r}")

    # the elements of all splits (MACE would take the train split's only)
    elements = sorted({int(z) for split in SPLITS for a in frames[split] for z in a.numbers})
    training_info: dict[str, Any] = {}
    if not args.skip_training:
        training_info = train(args, work, out, frames, elements)

    # ------------------------------------------------------------ reload and evaluate
    import mace
    import torch

    import hip_head
    from hip_head.serialization import convert, load_backbone

    torch.set_num_threads(args.threads)
    convert(out, out, trust=True)  # mace_run_train's own pickle, written by this run
    model = load_backbone(out)
    hip = hip_head.wrap(model, hessian="autograd")
    metrics = {}
    for split in SPLITS:
        metrics[split] = evaluate_energy_forces(hip, frames[split])
        log(
            f"{split}: E MAE {metrics[split]['energy_mae_mev_per_atom']:.2f} meV/atom, "
            f"F MAE {metrics[split]['forces_mae_mev_per_ang']:.1f} meV/Å"
        )
    t0 = time.time()
    hessian = evaluate_hessians(hip, frames["test"][: args.hessian_frames])
    log(f"test autograd Hessian MAE {hessian['hessian_mae']:.4f} eV/Å² ({time.time() - t0:.0f} s)")

    previous: dict[str, Any] = {}
    if args.skip_training and json_path.is_file():
        previous = json.loads(json_path.read_text()).get("training", {})
    result = {
        "description": args.description,
        "model_file": out.name,
        "file_size_bytes": out.stat().st_size,
        "file_format": "hip-head safe backbone format (state dict + JSON description); load "
        "with hip_head.serialization.load_backbone(path)",
        "model": model_summary(model),
        "dataset": {
            "files": [db.name for db in args.db],
            "sha256": [sha256(db) for db in args.db],
            "frames": {split: len(frames[split]) for split in SPLITS},
            "labels": "GFN2-xTB (tblite) energy eV, forces eV/Å, Hessian eV/Å²",
        },
        "training": training_info or previous,
        "metrics": metrics,
        "metrics_note": "energy MAE per atom = mean over frames of |ΔE|/N; force MAE over all "
        "Cartesian components; test split never used for training or model selection",
        "test_autograd_hessian": hessian,
        "test_autograd_hessian_note": "backbone's exact second derivative (hip_head.wrap(model, "
        "hessian='autograd')) vs the xTB Hessians of the test split, "
        "hip_head.finetune.losses.hessian_metrics, means over frames (eV/Å², Eckart "
        "eigenvalues eV/Å²/amu): the baseline a HIP head must beat",
        "versions": {
            "mace-torch": mace.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "script": "scripts/pretrain_mace.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "total_wall_seconds": round(time.time() - t_start, 1),
    }
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
