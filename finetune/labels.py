"""Labelling many structures with reference Hessians into an ASE database, resumably.

- :func:`label_many`: label structures with one engine (:data:`ENGINES`: GFN-xTB or PySCF, see
  :mod:`hip_head.finetune.engines`) in parallel into an ASE SQLite database; every result is
  written as soon as it is ready, and failures are recorded as failed rows, never crash the run.
- :func:`label_key`: the stable key of each input, by which a rerun skips finished structures.
- :func:`main_label`: the command line (``hip data label``).

The single-structure labellers (:func:`label_xtb`, :func:`label_pyscf`, :class:`LabelError`)
live in :mod:`hip_head.finetune.engines` and are importable from here too.

Database rows written by :func:`label_many` use the layout of
:func:`~hip_head.finetune.data.write_ase_db` (read back by
:class:`~hip_head.finetune.data.AseDbDataset`) plus the key-value pairs ``label_key`` (the
stable key of the input, see :func:`label_key`), ``status`` (``"done"`` or ``"failed"``),
``engine`` and ``level`` (e.g. ``"xtb:GFN2-xTB"``), and ``reason`` on failed rows. Failed rows
hold the structure with no energy, forces or Hessian.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import ctypes
import hashlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.data import HessianSample, write_ase_db
from hip_head.finetune.engines import (
    ENGINES,
    LabelError,
    label_pyscf,
    label_xtb,
    level_of_theory,
)

__all__ = [
    "ENGINES",
    "LabelError",
    "LabelReport",
    "label_key",
    "label_many",
    "label_pyscf",
    "label_xtb",
    "main_label",
]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# ---------------------------------------------------------------------------------- batch
def label_key(index: int, atoms: Atoms) -> str:
    """Stable key of input ``index``: ``"{index}-{formula}-{hash}"``.

    The hash is the first 12 hex digits of SHA-1 over the atomic numbers, the positions rounded
    to 1e-6 Å, and the charge and spin in ``atoms.info``; the same input list gives the same
    keys on every run.

    Args:
        index: position of the structure in the input list.
        atoms: the structure.

    Returns:
        The key.
    """
    h = hashlib.sha1()
    h.update(np.asarray(atoms.get_atomic_numbers(), dtype=np.int64).tobytes())
    h.update(np.round(atoms.get_positions(), 6).astype(np.float64).tobytes())
    h.update(f"{atoms.info.get('charge', 0)}/{atoms.info.get('spin', 1)}".encode())
    return f"{index}-{atoms.get_chemical_formula()}-{h.hexdigest()[:12]}"


@dataclass
class LabelReport:
    """Outcome of :func:`label_many`.

    Attributes:
        done: keys labelled in this run.
        skipped: keys already labelled in the database (not recomputed).
        failed: ``(key, reason)`` of the calculations that failed in this run.
        seconds: wall time of the run, s.
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _init_worker() -> None:
    """Pool initializer: one thread per worker for OpenMP/BLAS, torch and PySCF."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    try:  # libgomp already initialised (inherited state) ignores the variable: set it directly
        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(1)
    except (OSError, AttributeError):  # pragma: no cover - no GNU OpenMP runtime
        pass
    if "pyscf" in sys.modules:
        sys.modules["pyscf"].lib.num_threads(1)


#: ``atoms.info`` keys copied into each labelled row's meta (set by ``hip data sample``).
_CARRIED_INFO = ("molecule", "kind", "temperature_K", "imaginary_cm1")


def _run_one(
    engine: str, atoms: Atoms, options: dict[str, Any]
) -> tuple[HessianSample | None, str]:
    """Label one structure; never raises. Returns ``(sample, "")`` or ``(None, reason)``."""
    try:
        sample = ENGINES[engine](atoms, **options)
        # carry the sampling provenance (split_by_molecule groups by "molecule")
        for name in _CARRIED_INFO:
            if name in atoms.info and name not in sample.meta:
                sample.meta[name] = atoms.info[name]
        return sample, ""
    except Exception as exc:  # noqa: BLE001 - every failure becomes a failed row
        return None, f"{type(exc).__name__}: {exc}"


def _existing_rows(db_path: str) -> dict[str, list[tuple[int, str, str]]]:
    """``label_key -> [(row id, status, level)]`` of the rows already in the database."""
    import ase.db

    rows: dict[str, list[tuple[int, str, str]]] = {}
    if not os.path.isfile(db_path):
        return rows
    db = ase.db.connect(db_path, type="db")
    for row in db.select(include_data=False):
        key, status, level = row.get("label_key"), row.get("status"), row.get("level", "")
        if key is None:  # written but not yet tagged (crash between write and tag)
            meta = db.get(id=row.id).data.get("meta") or {}
            key, status, level = meta.get("label_key"), meta.get("status"), meta.get("level", "")
        if key is not None:
            rows.setdefault(str(key), []).append((row.id, str(status), str(level)))
    return rows


def _write_row(
    db_path: str,
    sample: HessianSample,
    key: str,
    status: str,
    level: str,
    engine: str,
    reason: str = "",
    replace: Sequence[int] = (),
) -> None:
    """Append one row (via :func:`write_ase_db`), tag it, and delete the rows it replaces."""
    import ase.db

    sample.meta.update(label_key=key, status=status, level=level)
    if reason:
        sample.meta["reason"] = reason
    write_ase_db([sample], db_path)
    tags: dict[str, Any] = {"label_key": key, "status": status, "level": level, "engine": engine}
    if reason:
        tags["reason"] = reason[:2000]
    db = ase.db.connect(db_path, type="db")
    with db:
        last = next(db.select(sort="-id", limit=1, include_data=False))
        db.update(last.id, **tags)
        if replace:
            db.delete(list(replace))


def label_many(
    atoms_list: Sequence[Atoms],
    db_path: str | os.PathLike,
    engine: str = "xtb",
    workers: int = 1,
    retry_failed: bool = True,
    progress: Callable[[str, str], None] | None = None,
    **engine_options: Any,
) -> LabelReport:
    """Label structures into an ASE database, in parallel and resumably.

    Each input gets the key :func:`label_key` (index, formula, hash of the positions). Inputs
    whose key already has a ``status="done"`` row are skipped. Every result is written as soon
    as it finishes (by this process, the only writer), so an interrupted run loses at most the
    calculations in flight. A calculation that raises (SCF not converged, impossible spin, ...)
    becomes a ``status="failed"`` row with its ``reason`` and never stops the run. On a rerun,
    failed keys are retried (``retry_failed=True``) and their old failed row is replaced by the
    new outcome, so each key has one row; with ``retry_failed=False`` they are kept and skipped.

    With ``workers > 1`` call this from a script guarded by ``if __name__ == "__main__":``
    (the usual multiprocessing rule: worker processes import the main module).

    Per-structure charge and spin come from ``atoms.info["charge"]`` / ``atoms.info["spin"]``
    (multiplicity) unless ``engine_options`` sets them.

    Args:
        atoms_list: the structures.
        db_path: the ``.db`` file (created or appended to).
        engine: ``"xtb"`` (:func:`label_xtb`) or ``"pyscf"`` (:func:`label_pyscf`).
        workers: processes; 1 runs in this process (with its thread settings). With more, a
            ``forkserver`` pool whose workers each run one OpenMP/BLAS/torch/PySCF thread (each
            worker imports torch and the engine once: ~2-5 s of start-up).
        retry_failed: recompute keys whose previous row failed.
        progress: called as ``progress(key, status)`` after each row is written.
        **engine_options: passed to the engine (e.g. ``method``, ``basis``, ``xc``, ``step``).

    Returns:
        The report.

    Raises:
        ValueError: unknown engine, or the database already holds rows labelled at another
            level of theory (use one database per level).
    """
    if engine not in ENGINES:
        raise InvalidArgumentError(f"engine must be one of {sorted(ENGINES)}; got {engine!r}")
    t0 = time.perf_counter()
    db_path = os.fspath(db_path)
    level = level_of_theory(engine, engine_options)
    existing = _existing_rows(db_path)
    other = {lv for rows in existing.values() for _, _, lv in rows if lv and lv != level}
    if other:
        raise InvalidArgumentError(
            f"{db_path} holds rows at level {sorted(other)}, not {level!r}; use another database"
        )
    report = LabelReport()
    todo: list[tuple[str, Atoms, list[int]]] = []
    for i, atoms in enumerate(atoms_list):
        key = label_key(i, atoms)
        rows = existing.get(key, [])
        if any(status == "done" for _, status, _ in rows) or (rows and not retry_failed):
            report.skipped.append(key)
        else:
            todo.append((key, atoms, [rid for rid, _, _ in rows]))

    def record(key: str, atoms: Atoms, old: list[int], sample: HessianSample | None, why: str):
        if sample is None:
            failed = HessianSample(
                positions=atoms.get_positions(),
                numbers=atoms.get_atomic_numbers(),
                charge=int(atoms.info.get("charge", 0)),
                spin=int(atoms.info.get("spin", 1)),
            )
            _write_row(db_path, failed, key, "failed", level, engine, why, old)
            report.failed.append((key, why))
        else:
            _write_row(db_path, sample, key, "done", level, engine, replace=old)
            report.done.append(key)
        if progress is not None:
            progress(key, "failed" if sample is None else "done")

    if workers <= 1:
        for key, atoms, old in todo:
            record(key, atoms, old, *_run_one(engine, atoms, engine_options))
    else:
        # forkserver: workers start from a clean process (no inherited OpenMP/BLAS thread pools,
        # which can deadlock after fork) and import tblite/PySCF after the thread limits are set
        context = multiprocessing.get_context("forkserver")
        with cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker
        ) as pool:
            futures = {
                pool.submit(_run_one, engine, atoms, engine_options): (key, atoms, old)
                for key, atoms, old in todo
            }
            for fut in cf.as_completed(futures):
                key, atoms, old = futures[fut]
                try:
                    sample, why = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed (out of memory)
                    sample, why = None, f"worker died: {type(exc).__name__}: {exc}"
                record(key, atoms, old, sample, why)
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------------------------- CLI
def main_label(argv: Sequence[str] | None = None) -> int:
    """``hip data label``: label xyz/extxyz structures into an ASE database.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 when every structure is labelled (now or before), 1 when some failed.
    """
    import ase.io

    parser = argparse.ArgumentParser(
        prog="hip data label",
        description="Label structures with reference Hessians (xTB or PySCF) into an ASE "
        "database. Resumable: rerunning skips finished structures and retries failed ones.",
    )
    parser.add_argument("inputs", nargs="+", help="xyz/extxyz files (all frames are read)")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="xtb")
    parser.add_argument("--out", required=True, help="output ASE .db file")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument(
        "--method", default=None, help="GFN2-xTB/GFN1-xTB (xtb); RKS/UKS/RHF/UHF (pyscf)"
    )
    parser.add_argument("--basis", default="6-31g(d)", help="basis set (pyscf)")
    parser.add_argument("--xc", default="wb97x", help="functional for RKS/UKS (pyscf)")
    parser.add_argument("--step", type=float, default=1e-3, help="FD step, Å (xtb)")
    parser.add_argument(
        "--no-retry", action="store_true", help="keep previously failed rows, do not retry"
    )
    args = parser.parse_args(argv)

    frames: list[Atoms] = []
    for path in args.inputs:
        frames.extend(ase.io.read(path, index=":"))
    if args.engine == "xtb":
        options: dict[str, Any] = {"method": args.method or "GFN2-xTB", "step": args.step}
    else:
        options = {"method": args.method or "RKS", "basis": args.basis, "xc": args.xc}

    def progress(key: str, status: str) -> None:
        print(f"{status:6s} {key}", flush=True)

    report = label_many(
        frames,
        args.out,
        engine=args.engine,
        workers=args.workers,
        retry_failed=not args.no_retry,
        progress=progress,
        **options,
    )
    print(
        f"{len(report.done)} labelled, {len(report.skipped)} skipped (already in {args.out}), "
        f"{len(report.failed)} failed, {report.seconds:.1f} s"
    )
    for key, reason in report.failed:
        print(f"failed {key}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0
