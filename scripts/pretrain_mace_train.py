"""Training half of ``scripts/pretrain_mace.py``: the dataset export and MACE's own trainer.

:func:`read_split` reads a split of the default-format databases as ``ase.Atoms``;
:func:`train` writes the splits as extended XYZ under the work folder, runs ``mace_run_train``
(mace-torch, a subprocess with a fixed seed) with :data:`ARCHITECTURE` and :data:`TRAINING`,
stops it at a time limit and lets MACE save the best checkpoint, and copies the saved
``.model`` to the output path. Conversion to hip-head's backbone format and the evaluation stay
in ``pretrain_mace.py``, whose CLI drives this module.
"""

from __future__ import annotations

import argparse
import os
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


# ---------------------------------------------------------------------------------- training
# ---------------------------------------------------------------------------------- training
def foundation_model_file(init: Path, work: Path) -> Path:
    """The file ``mace_run_train --foundation_model`` reads for the weights ``init``.

    MACE's trainer unpickles a whole module. A MACE ``.model`` pickle is passed as it is (the
    user named it to start from). hip-head's safe backbone file (the format of the shipped
    ``mace_pretrained.model`` and of this script's outputs) holds no module; it is rebuilt
    without unpickling (:func:`hip_head.serialization.load_backbone`) and saved under ``work``
    as the module MACE expects.
    """
    import torch

    from hip_head.errors import UntrustedFileError
    from hip_head.serialization import load_backbone

    try:
        module = load_backbone(init)
    except UntrustedFileError:
        return init.resolve()
    out = work / "foundation.model"
    work.mkdir(parents=True, exist_ok=True)
    torch.save(module, out)
    return out.resolve()


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


def write_splits(work: Path, frames: dict[str, list[Any]]) -> None:
    """A fresh work folder: stale checkpoints, logs, results and models of an earlier run are
    removed, and each split is written as ``work/<split>.xyz`` (extended XYZ with
    ``REF_energy`` eV and ``REF_forces`` eV/Å)."""
    import ase.io

    for sub in ("checkpoints", "logs", "results"):
        shutil.rmtree(work / sub, ignore_errors=True)
    for stale in work.glob(f"{NAME}*.model"):
        stale.unlink()
    work.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        ase.io.write(work / f"{split}.xyz", frames[split], format="extxyz")


def train(
    args: argparse.Namespace,
    work: Path,
    out: Path,
    frames: dict[str, list[Any]],
    elements: list[int],
) -> dict[str, Any]:
    """Train with ``mace_run_train`` and copy its saved model (MACE's pickle) to ``out``.

    ``args`` are ``pretrain_mace.py``'s options (``epochs``, ``stage_two_epochs``,
    ``max_minutes``, ``dtype``, ``threads``, ``init``, ``lr``); ``elements`` the atomic numbers
    of the model. Returns the ``training`` record of the json (options, epochs run, best
    epochs, whether the time limit stopped it, wall time, machine, MACE's error tables).
    """
    write_splits(work, frames)
    log_path = work / "mace_train.log"
    log_path.write_text("")
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start_swa = args.epochs - args.stage_two_epochs
    extra: dict[str, Any] = {}
    if args.init is not None:
        extra["foundation_model"] = foundation_model_file(args.init, work)
    if args.lr is not None:
        extra["lr"] = args.lr
    log(
        f"mace_run_train: {args.epochs} epochs (stage two from epoch {start_swa}), "
        f"{args.dtype}, log {log_path}"
    )
    t0 = time.time()
    timeout = None if args.max_minutes is None else 60.0 * args.max_minutes
    stopped = run_mace(
        mace_arguments(work, args.epochs, args.dtype, elements, {"start_swa": start_swa, **extra}),
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
        run_mace(mace_arguments(work, last, args.dtype, elements, finalize), log_path, None, env)
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

    log(f"training took {train_wall / 60:.1f} min ({n_epochs} epochs, kept {kept})")
    return {
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
