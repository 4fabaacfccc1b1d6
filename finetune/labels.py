"""Reference Hessian labels from quantum chemistry: GFN-xTB (tblite) and PySCF.

Every labeller returns a :class:`~hip_head.finetune.data.HessianSample` in hip-head's units and
layout: energy eV, forces (N, 3) eV/Å, Hessian flat ``((3N)**2,)`` eV/Å², the row-major
(3N, 3N) matrix with index ``3a + α``.

- :func:`label_xtb`: GFN1/GFN2-xTB through ``tblite.ase.TBLite``; the Hessian by central
  differences of the analytic gradients (6N gradient calls), symmetrised.
- :func:`label_pyscf`: RHF/UHF/RKS/UKS analytic Hessian from PySCF (``mf.Hessian().kernel()``),
  converted from Hartree/Bohr² to eV/Å².
- :func:`label_many`: label many molecules in parallel into an ASE SQLite database, resumably;
  failures are recorded as failed rows, never crash the run.
- :func:`main_label`: the command line (``hip data label``).

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
from ase import Atoms, units

from hip_head.autograd import finite_difference_hessian
from hip_head.errors import HIPError
from hip_head.finetune.data import HessianSample, write_ase_db
from hip_head.units import hartree_per_bohr2_to_ev_per_a2

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


class LabelError(HIPError, RuntimeError):
    """A reference calculation failed (SCF not converged, inconsistent charge/spin, ...)."""


# ---------------------------------------------------------------------------------- xTB
def label_xtb(
    atoms: Atoms,
    method: str = "GFN2-xTB",
    step: float = 1e-3,
    charge: int | None = None,
    spin: int | None = None,
    accuracy: float = 0.01,
    **calc_options: Any,
) -> HessianSample:
    """Label one structure with GFN-xTB (tblite).

    Energy and forces are tblite's analytic values at ``atoms``. The Hessian is the central
    difference of the analytic forces, column ``3a + α`` = ``-(F(x + h e) - F(x - h e)) / 2h``
    (6N gradient calls; truncation error O(h²)), then symmetrised as ``(H + Hᵀ) / 2``; the
    asymmetry removed is kept in ``meta["fd_asymmetry"]`` (max |H - Hᵀ| / 2, eV/Å²) as an error
    estimate.

    Args:
        atoms: the structure (N atoms, positions Å); not modified.
        method: ``"GFN2-xTB"``, ``"GFN1-xTB"`` or ``"IPEA1-xTB"``.
        step: finite-difference displacement h, Å.
        charge: total charge, e; None: ``atoms.info["charge"]`` or 0.
        spin: spin multiplicity 2S + 1 (the :class:`HessianSample` convention); None:
            ``atoms.info["spin"]`` or 1.
        accuracy: tblite's numerical accuracy (SCF and integral thresholds; tblite's default is
            1.0). The default 0.01 costs ~30% more time than 1.0 but cuts the SCF noise in the
            forces ~100-fold: at 1.0 the forces carry ~1e-4 eV/Å of noise, i.e. ~0.05 eV/Å² of
            noise in a Hessian with h = 1e-3 Å (measured ``fd_asymmetry``: water 0.023 vs
            0.0002, a 20-atom dimer 0.10 vs 0.001 eV/Å²).
        **calc_options: more ``tblite.ase.TBLite`` keywords (e.g. ``accuracy``,
            ``electronic_temperature``, ``solvation``).

    Returns:
        The sample: energy eV, forces (N, 3) eV/Å, Hessian ((3N)²,) eV/Å², charge, spin
        (multiplicity) and ``meta`` with ``engine``, ``method``, ``step``, ``accuracy``,
        ``fd_asymmetry``, ``seconds``.

    Raises:
        LabelError: tblite failed (SCF not converged, electrons/multiplicity inconsistent, ...).
    """
    from tblite.ase import TBLite

    t0 = time.perf_counter()
    charge = int(atoms.info.get("charge", 0) if charge is None else charge)
    spin = int(atoms.info.get("spin", 1) if spin is None else spin)
    work = Atoms(numbers=atoms.get_atomic_numbers(), positions=atoms.get_positions())
    work.calc = TBLite(
        method=method,
        charge=charge,
        multiplicity=spin,
        accuracy=accuracy,
        verbosity=0,
        **calc_options,
    )

    def forces_fn(positions: np.ndarray) -> np.ndarray:
        work.set_positions(positions)
        return work.get_forces()

    try:
        x0 = atoms.get_positions()
        hessian = finite_difference_hessian(forces_fn, x0, step=step)
        work.set_positions(x0)
        energy = work.get_potential_energy()
        forces = work.get_forces()
    except Exception as exc:  # noqa: BLE001 - tblite raises CalculationFailed, RuntimeError...
        raise LabelError(f"tblite {method} failed: {exc}") from exc
    asym = 0.5 * float(np.abs(hessian - hessian.T).max())
    hessian = 0.5 * (hessian + hessian.T)
    return HessianSample(
        positions=x0,
        numbers=atoms.get_atomic_numbers(),
        energy=float(energy),
        forces=np.array(forces, dtype=np.float64),
        hessian=hessian.reshape(-1),
        charge=charge,
        spin=spin,
        meta={
            "engine": "xtb",
            "method": method,
            "step": float(step),
            "accuracy": float(accuracy),
            "fd_asymmetry": asym,
            "seconds": time.perf_counter() - t0,
        },
    )


# ---------------------------------------------------------------------------------- PySCF
_PYSCF_METHODS = ("RHF", "UHF", "RKS", "UKS")


def label_pyscf(
    atoms: Atoms,
    method: str = "RKS",
    xc: str = "wb97x",
    basis: str = "6-31g(d)",
    charge: int | None = None,
    spin: int | None = None,
    max_memory: int = 4000,
    conv_tol: float = 1e-10,
) -> HessianSample:
    """Label one structure with a PySCF analytic Hessian.

    PySCF's Hessian ``mf.Hessian().kernel()`` has shape (N, N, 3, 3) in Hartree/Bohr²; it is
    transposed to (N, 3, N, 3), reshaped to (3N, 3N) (index ``3a + α``), converted to eV/Å²
    with :func:`hip_head.units.hartree_per_bohr2_to_ev_per_a2` and symmetrised (the analytic
    Hessian is symmetric up to CPHF convergence). Energy Hartree → eV and forces
    ``-gradient`` Hartree/Bohr → eV/Å use ``ase.units``.

    Args:
        atoms: the structure (positions Å); not modified.
        method: ``"RHF"``, ``"UHF"``, ``"RKS"`` or ``"UKS"`` (KS methods use ``xc``).
        xc: exchange-correlation functional (PySCF/libxc name), for RKS/UKS only.
        basis: basis set name.
        charge: total charge, e; None: ``atoms.info["charge"]`` or 0.
        spin: 2S = N_alpha − N_beta (**PySCF's convention**, not the multiplicity); None:
            ``atoms.info["spin"] - 1`` (info holds the multiplicity) or 0. The returned sample
            stores the multiplicity ``spin + 1``.
        max_memory: PySCF memory limit, MB.
        conv_tol: SCF energy convergence threshold, Hartree.

    Returns:
        The sample: energy eV, forces (N, 3) eV/Å, Hessian ((3N)²,) eV/Å², charge,
        spin (multiplicity) and ``meta`` with ``engine``, ``method``, ``xc``, ``basis``,
        ``seconds``.

    Raises:
        LabelError: the SCF did not converge, or PySCF rejected the molecule (e.g. a charge and
            spin inconsistent with the electron count).
        ValueError: an unknown ``method``.
    """
    from pyscf import dft, gto, scf

    method = method.upper()
    if method not in _PYSCF_METHODS:
        raise ValueError(f"method must be one of {_PYSCF_METHODS}; got {method!r}")
    t0 = time.perf_counter()
    charge = int(atoms.info.get("charge", 0) if charge is None else charge)
    spin = int(atoms.info.get("spin", 1) - 1 if spin is None else spin)
    try:
        mol = gto.M(
            atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            unit="Angstrom",
            basis=basis,
            charge=charge,
            spin=spin,
            verbose=0,
            max_memory=max_memory,
        )
    except Exception as exc:  # noqa: BLE001 - PySCF raises RuntimeError/KeyError/...
        raise LabelError(f"PySCF rejected the molecule: {exc}") from exc
    if method in ("RKS", "UKS"):
        mf = (dft.RKS if method == "RKS" else dft.UKS)(mol, xc=xc)
    else:
        mf = (scf.RHF if method == "RHF" else scf.UHF)(mol)
    mf.conv_tol = conv_tol
    energy = mf.kernel()
    if not mf.converged:
        raise LabelError(
            f"PySCF {method} SCF not converged in {mf.max_cycle} cycles (last E = {energy} Ha)"
        )
    try:
        gradient = np.asarray(mf.nuc_grad_method().kernel(), dtype=np.float64)  # (N, 3) Ha/Bohr
        hess_au = np.asarray(mf.Hessian().kernel(), dtype=np.float64)  # (N, N, 3, 3) Ha/Bohr²
    except Exception as exc:  # noqa: BLE001
        raise LabelError(f"PySCF gradient/Hessian failed: {exc}") from exc
    n = len(atoms)
    hessian = hartree_per_bohr2_to_ev_per_a2(hess_au.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n))
    hessian = 0.5 * (hessian + hessian.T)
    return HessianSample(
        positions=atoms.get_positions(),
        numbers=atoms.get_atomic_numbers(),
        energy=float(energy) * units.Hartree,
        forces=-gradient * (units.Hartree / units.Bohr),
        hessian=hessian.reshape(-1),
        charge=charge,
        spin=spin + 1,
        meta={
            "engine": "pyscf",
            "method": method,
            "xc": xc if method in ("RKS", "UKS") else "",
            "basis": basis,
            "seconds": time.perf_counter() - t0,
        },
    )


#: Engine name -> labeller ``f(atoms, **options) -> HessianSample``.
ENGINES: dict[str, Callable[..., HessianSample]] = {"xtb": label_xtb, "pyscf": label_pyscf}


def _level(engine: str, options: dict[str, Any]) -> str:
    """Level-of-theory tag stored with each row, e.g. ``xtb:GFN2-xTB``, ``pyscf:RKS/wb97x/...``."""
    if engine == "xtb":
        return f"xtb:{options.get('method', 'GFN2-xTB')}"
    if engine == "pyscf":
        method = str(options.get("method", "RKS")).upper()
        xc = f"/{options.get('xc', 'wb97x')}" if method in ("RKS", "UKS") else ""
        return f"pyscf:{method}{xc}/{options.get('basis', '6-31g(d)')}"
    return engine


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
        raise ValueError(f"engine must be one of {sorted(ENGINES)}; got {engine!r}")
    t0 = time.perf_counter()
    db_path = os.fspath(db_path)
    level = _level(engine, engine_options)
    existing = _existing_rows(db_path)
    other = {lv for rows in existing.values() for _, _, lv in rows if lv and lv != level}
    if other:
        raise ValueError(
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
