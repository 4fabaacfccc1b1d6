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

Usage::

    .venv/bin/python scripts/pretrain_mace.py                      # the shipped model
    .venv/bin/python scripts/pretrain_mace.py --db /tmp/small.db --out /tmp/m.model --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAME = "hip_mace_small"
SPLITS = ("train", "val", "test")

#: Architecture of the shipped model (mace_run_train options).
ARCHITECTURE: dict[str, Any] = {
    "model": "ScaleShiftMACE",
    "r_max": 5.0,
    "num_radial_basis": 8,
    "num_cutoff_basis": 5,
    "num_interactions": 2,
    "num_channels": 32,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 3,
    "MLP_irreps": "16x0e",
    "radial_MLP": "[32, 32, 32]",
    "interaction_first": "RealAgnosticResidualInteractionBlock",
    "interaction": "RealAgnosticResidualInteractionBlock",
    "scaling": "rms_forces_scaling",
}

#: Optimisation (mace_run_train options); ``max_num_epochs`` comes from ``--epochs`` and
#: ``start_swa`` (the first stage-two epoch) from ``--stage-two-epochs``.
TRAINING: dict[str, Any] = {
    "loss": "weighted",
    "energy_weight": 10.0,
    "forces_weight": 100.0,
    "optimizer": "adam",
    "amsgrad": True,
    "lr": 0.01,
    "weight_decay": 5e-7,
    "scheduler": "ReduceLROnPlateau",
    "lr_factor": 0.8,
    "scheduler_patience": 5,
    "patience": 40,
    "batch_size": 8,
    "valid_batch_size": 32,
    "ema": True,
    "ema_decay": 0.99,
    "clip_grad": 10.0,
    # MACE's stage two (``--swa``): from ``start_swa`` on, energy-heavy loss and a lower lr
    "swa": True,
    "swa_lr": 1e-3,
    "swa_energy_weight": 1000.0,
    "swa_forces_weight": 100.0,
    "E0s": "average",
    "seed": 0,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------- data
def read_split(db_paths: Path | list[Path], split: str) -> list[Any]:
    """The rows of ``split`` of every database as ``ase.Atoms`` (no calculator) with their
    labels in ``info["REF_energy"]`` (eV), ``arrays["REF_forces"]`` (eV/Å) and the db
    metadata in ``info`` (``db`` path, ``row_id``, ``molecule``, ``kind``)."""
    import ase.db
    from ase import Atoms

    frames = []
    for db_path in [db_paths] if isinstance(db_paths, Path) else db_paths:
        with ase.db.connect(str(db_path), type="db", use_lock_file=False) as db:
            for row in db.select(split=split):
                if row.get("status") == "failed":
                    continue
                atoms = Atoms(numbers=row.numbers, positions=row.positions)
                atoms.info["REF_energy"] = float(row.energy)
                atoms.arrays["REF_forces"] = np.asarray(row.forces, dtype=np.float64)
                atoms.info["db"] = str(db_path)
                atoms.info["row_id"] = int(row.id)
                atoms.info["molecule"] = str(row.get("molecule", ""))
                atoms.info["kind"] = str(row.get("kind", ""))
                frames.append(atoms)
    return frames


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


# ---------------------------------------------------------------------------------- training
def mace_arguments(
    work: Path, epochs: int, dtype: str, elements: list[int], extra: dict[str, Any]
) -> list[str]:
    """The ``mace_run_train`` command line (without the program)."""
    opts: dict[str, Any] = {
        "name": NAME,
        "work_dir": work,
        "log_dir": work / "logs",
        "model_dir": work,
        "checkpoints_dir": work / "checkpoints",
        "results_dir": work / "results",
        "train_file": work / "train.xyz",
        "valid_file": work / "val.xyz",
        "test_file": work / "test.xyz",
        "energy_key": "REF_energy",
        "forces_key": "REF_forces",
        "device": "cpu",
        "default_dtype": dtype,
        "max_num_epochs": epochs,
        "error_table": "PerAtomMAE",
        "plot": False,
        "num_workers": 0,
        "atomic_numbers": "[" + ", ".join(map(str, elements)) + "]",
        **ARCHITECTURE,
        **TRAINING,
        **extra,
    }
    args = []
    for key, value in opts.items():
        if value is True:
            args.append(f"--{key}")
        elif value is False and key != "plot":
            continue
        else:
            args.append(f"--{key}={value}")
    return args


def run_mace(args: list[str], log_path: Path, timeout_s: float | None, env: dict[str, str]) -> bool:
    """Run mace_run_train; returns ``True`` when it was stopped by ``timeout_s``."""
    cmd = [sys.executable, "-c", "from mace.cli.run_train import main; main()", *args]
    with open(log_path, "a") as fh:
        fh.write("$ mace_run_train " + " ".join(args) + "\n")
        fh.flush()
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **env}
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return True
    if rc != 0:
        tail = "".join(open(log_path).readlines()[-40:])
        raise SystemExit(f"mace_run_train failed (exit {rc}); log {log_path}:\n{tail}")
    return False


def checkpoint_epochs(work: Path) -> dict[bool, list[int]]:
    """Epochs of the checkpoints MACE kept (the best validation loss so far), by stage:
    ``{False: stage one, True: stage two (swa)}``."""
    epochs: dict[bool, list[int]] = {False: [], True: []}
    for path in (work / "checkpoints").glob(f"{NAME}_run-*_epoch-*.pt"):
        match = re.search(r"_epoch-(\d+)(_swa)?\.pt$", path.name)
        if match:
            epochs[match.group(2) is not None].append(int(match.group(1)))
    return {stage: sorted(found) for stage, found in epochs.items()}


def discard_unreadable_checkpoints(work: Path) -> None:
    """A checkpoint half-written when the trainer was stopped is removed."""
    import torch

    for path in (work / "checkpoints").glob(f"{NAME}_run-*_epoch-*.pt"):
        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - any unreadable file
            log(f"removing unreadable checkpoint {path.name}")
            path.unlink()


def epochs_trained(log_path: Path) -> int:
    """Number of epochs the trainer logged (``Epoch N: ...`` lines, N from 0)."""
    seen = [int(m) for m in re.findall(r"Epoch (\d+):", log_path.read_text())]
    return max(seen) + 1 if seen else 0


# -------------------------------------------------------------------------------- evaluation
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
        import ase.io

        for sub in ("checkpoints", "logs", "results"):  # a fresh run: no stale checkpoints
            shutil.rmtree(work / sub, ignore_errors=True)
        for stale in work.glob(f"{NAME}*.model"):
            stale.unlink()
        work.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            ase.io.write(work / f"{split}.xyz", frames[split], format="extxyz")
        log_path = work / "mace_train.log"
        log_path.write_text("")
        env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        start_swa = args.epochs - args.stage_two_epochs
        extra: dict[str, Any] = {}
        if args.init is not None:
            extra["foundation_model"] = args.init.resolve()
        if args.lr is not None:
            extra["lr"] = args.lr
        log(
            f"mace_run_train: {args.epochs} epochs (stage two from epoch {start_swa}), "
            f"{args.dtype}, log {log_path}"
        )
        t0 = time.time()
        timeout = None if args.max_minutes is None else 60.0 * args.max_minutes
        stopped = run_mace(
            mace_arguments(
                work, args.epochs, args.dtype, elements, {"start_swa": start_swa, **extra}
            ),
            log_path,
            timeout,
            env,
        )
        train_wall = time.time() - t0
        n_epochs = epochs_trained(log_path)
        if stopped:
            log(f"time limit reached after {n_epochs} epochs: saving the best checkpoint")
            discard_unreadable_checkpoints(work)
            kept = checkpoint_epochs(work)
            # rerun with no epochs left: MACE reloads the latest (best) checkpoint and saves
            finalize: dict[str, Any] = {"restart_latest": True, **extra}
            if kept[True]:
                last = kept[True][-1]
                finalize["start_swa"] = min(start_swa, last - 1)  # must stay < max epochs
            elif kept[False]:
                last = kept[False][-1]
                finalize["swa"] = False
            else:
                raise SystemExit("stopped before the first checkpoint: raise --max-minutes")
            run_mace(
                mace_arguments(work, last, args.dtype, elements, finalize), log_path, None, env
            )
        kept = checkpoint_epochs(work)
        stage_two = bool(kept[True])
        saved = work / (f"{NAME}_stagetwo.model" if stage_two else f"{NAME}.model")
        if not saved.is_file():
            raise SystemExit(f"mace_run_train wrote no {saved}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved, out)
        tables = {
            title: body.rstrip("\n").splitlines()
            for title, body in re.findall(
                r"Error-table on (.*?):\n((?:[+|].*\n)+)", log_path.read_text()
            )
        }
        from hip_head.provenance import machine_description

        training_info = {
            "trainer": "mace_run_train (mace-torch), subprocess",
            "mace_run_train_options": {
                **ARCHITECTURE,
                **TRAINING,
                **{k: str(v) for k, v in extra.items()},
                "max_num_epochs": args.epochs,
                "default_dtype": args.dtype,
                "atomic_numbers": elements,
            },
            "epochs_run": n_epochs,
            "start_swa": start_swa,
            "best_epoch": {
                "stage_one": kept[False][-1] if kept[False] else None,
                "stage_two": kept[True][-1] if kept[True] else None,
            },
            "saved_stage": "two" if stage_two else "one",
            "stopped_by_time_limit": stopped,
            "max_minutes": args.max_minutes,
            "wall_seconds": round(train_wall, 1),
            "machine": {**machine_description(device="cpu"), "threads": args.threads},
            "mace_error_tables": tables,
        }
        log(f"training took {train_wall / 60:.1f} min ({n_epochs} epochs, kept {kept})")

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
