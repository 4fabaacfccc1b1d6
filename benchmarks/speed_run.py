"""One run of the speed benchmark: what is skipped, one row per structure, the results.

:func:`run_benchmark` measures every method at every size (and on the batch of small
molecules) through a runner of ``speed_isolation`` and returns the results written to the JSON.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from speed_isolation import InProcessRunner, ProcessRunner
from speed_report import fmt, write_json
from speed_setup import BACKBONES, BATCH, COLUMNS, Settings, Structure, methods_for, ratios_for

__all__ = ["machine_info", "run_benchmark", "skip_reason"]


def skip_reason(
    method: str,
    atoms: int,
    settings: Settings,
    last: dict[str, tuple[int, float, float | None]] | None = None,
) -> str | None:
    """Why ``method`` is not run at ``atoms`` atoms, or None.

    Args:
        method: one of :data:`METHODS`.
        atoms: the molecule size (for a batch: its largest molecule).
        settings: the run's settings (the ``max_*_atoms`` limits).
        last: method -> (atoms, ms, peak MiB) of its largest measurement so far, quoted.
    """
    from hip_head.autograd import DEFAULT_SEED_ATOM_BUDGET

    limits = {
        "hip": (
            "--max-flat-atoms",
            settings.max_flat_atoms,
            f": the flat Hessian holds (3N)² = {(3 * atoms) ** 2:.3g} numbers (hip_blocks "
            "gives the same blocks without it)",
        ),
        "autograd": (
            "--max-autograd-atoms",
            settings.max_autograd_atoms,
            ": 3N double-backward VJPs, batched by vmap in chunks of "
            f"{DEFAULT_SEED_ATOM_BUDGET} seed-atoms",
        ),
        "fd": (
            "--max-fd-atoms",
            settings.max_fd_atoms,
            f": finite differences need 6N = {6 * atoms} E+F calls",
        ),
        "mace_hessian": (
            "--max-mace-hessian-atoms",
            settings.max_mace_hessian_atoms,
            ": MACE's compute_hessian takes 3N VJPs in chunks of 1 to 16",
        ),
    }
    if method in limits:
        flag, limit, why = limits[method]
        if limit is not None and atoms > limit:
            reason = f"N = {atoms} > {flag} {limit}{why}"
            if last and method in last:
                done, ms, peak = last[method]
                reason += f" (at {done} atoms one call took {ms / 1e3:.3g} s"
                reason += f" and {fmt(peak)} MiB)" if peak is not None else ")"
            return reason
    return None


def machine_info(settings: Settings) -> dict[str, Any]:
    """The shared machine description (:func:`hip_head.provenance.machine_description`) with the
    backbone's package version, the run's dtype and device, the glibc allocator's settings from
    the environment (``MALLOC_*``, ``{}`` when none) and the host memory available at the
    start (GiB)."""
    from hip_head.memory import available_memory_bytes
    from hip_head.provenance import machine_description

    packages = ["mace-torch", BACKBONES[settings.backbone]["package"]]
    info = machine_description(packages, device=settings.device)
    return {
        **info,
        "dtype": settings.dtype,
        "device": settings.device,
        "malloc_environment": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "host_memory_available_gib_at_start": round(available_memory_bytes("cpu") / 2**30, 1),
    }


def _load_average() -> float | None:
    """The 1-minute load average of the machine (runnable processes, ours included), or None
    where the OS does not report it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure_row(
    runner: InProcessRunner | ProcessRunner,
    structure: Structure,
    settings: Settings,
    last: dict[str, tuple[int, float, float | None]],
) -> dict[str, Any]:
    """Every method of ``settings`` on one structure: one row of the results.

    Args:
        runner: where the measurements run.
        structure: an atom count, or :data:`speed_setup.BATCH`.
        settings: what to run.
        last: method -> its largest single-molecule measurement so far (updated here).
    """
    batch = structure == BATCH
    described = runner.describe(structure)
    methods = methods_for(settings.backbone, batch)
    skipped: dict[str, str] = {}
    if "describe_error" in described:  # too big to count its edges and pairs
        skipped["counts"] = described.pop("describe_error")
    if batch:  # "atoms" (all of them) comes first, as in the single-molecule rows
        row: dict[str, Any] = {**described, "methods": list(methods)}
        limit_atoms = described["atoms_per_molecule"][1]
        tag = f"[batch of {described['molecules']}]"
    else:
        row = {"atoms": structure, **described}
        limit_atoms = int(structure)
        tag = f"[{structure:4d} atoms]"
    raw: dict[str, Any] = {}
    for method in methods:
        reason = skip_reason(method, limit_atoms, settings, None if batch else last)
        if reason and batch:
            reason = f"largest molecule: {reason}"
        load_before = _load_average()
        result = None if reason else runner.measure(structure, method)
        if result is not None and not result["ok"]:
            reason = result["error"]
        if reason:
            row[f"{method}_ms"] = row[f"{method}_peak_mb"] = None
            skipped[method] = reason
            _log(f"{tag} {method:13s} skipped: {reason}")
            continue
        row[f"{method}_ms"] = result["ms"]
        row[f"{method}_peak_mb"] = result["peak_mb"]
        if not batch:
            last[method] = (limit_atoms, result["ms"], result["peak_mb"])
        if result["peak_mb"] is None:
            skipped[f"{method}_peak_mb"] = "peak memory not measurable here"
        raw[method] = {k: v for k, v in result.items() if k not in ("ok", "ms")}
        raw[method]["load_average_1min"] = [load_before, _load_average()]
        _log(f"{tag} {method:13s} {result['ms']:11.2f} ms   peak {fmt(result['peak_mb'])} MiB")
    for name, (num, den) in ratios_for(settings.backbone, batch).items():
        a, b = row[f"{num}_ms"], row[f"{den}_ms"]
        row[name] = a / b if a is not None and b else None
    row["skipped"] = skipped
    row["raw"] = raw
    return row


def run_benchmark(settings: Settings, out: Path | None = None) -> dict[str, Any]:
    """Run every method at every size (and on the batch); the JSON is rewritten after each row.

    Args:
        settings: what to run.
        out: JSON path (None: do not write).

    Returns:
        The results (``machine``, ``settings``, ``molecules``, ``columns``, ``rows``, and
        ``batch`` with ``settings.batch_small``).
    """
    results: dict[str, Any] = {
        "benchmark": "hip-head speed: backbone E+F vs HIP E+F+H vs exact Hessians",
        "machine": machine_info(settings),
        "settings": asdict(settings),
        "methods": list(methods_for(settings.backbone)),
        "molecules": "saturated acyclic H/C/N/O molecules from organic_molecule() in "
        "benchmarks/speed_molecules.py: diamond-lattice heavy atoms grown compactly "
        "(liquid-like density), ~1/8 O and ~1/8 N, deterministic (seed settings.seed); the "
        "batch: small_molecule_batch() there",
        "columns": COLUMNS,
        "rows": [],
    }
    runner_cls = InProcessRunner if settings.isolation == "none" else ProcessRunner
    runner = runner_cls(settings)
    try:
        results["machine"].update(runner.info)
        _log(
            f"speed benchmark ({settings.backbone}): {results['machine']['cpu']}, "
            f"{settings.device}, {settings.dtype}, "
            f"{runner.info['torch_threads']} threads, isolation {settings.isolation}"
        )
        last: dict[str, tuple[int, float, float | None]] = {}
        for atoms in sorted(set(settings.sizes)):
            results["rows"].append(_measure_row(runner, atoms, settings, last))
            if out is not None:
                write_json(out, results)
        if settings.batch_small:
            results["batch"] = _measure_row(runner, BATCH, settings, last)
            if out is not None:
                write_json(out, results)
    finally:
        runner.close()
    return results
