"""Results of ``benchmarks/ts_search.py``: the results file, summaries, tables, the plot.

Kept apart from the searches so that reading and reporting results needs neither a model nor
xTB. Units as in the benchmark: Å, kcal/mol, s.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hip_head.provenance import machine_description

#: Method key -> label in the tables.
METHODS: dict[str, str] = {
    "hip": "HIP",
    "autograd": "autograd",
    "none": "no Hessian",
    "xtb": "xTB oracle",
    "hip_adaptive": "HIP, adaptive",
    "autograd_adaptive": "autograd, adaptive",
    "hip_climb_exact_check": "HIP climb, exact check",
}


# ---------------------------------------------------------------------------------- results
def read_results(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(reaction, method, model) -> record`` of a results file (later lines win; unreadable
    lines, e.g. one cut short by a kill, are skipped)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            out[(rec["reaction"], rec["method"], rec["model"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mae(values: Sequence[float]) -> float | None:
    return float(np.mean(np.abs(values))) if values else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-method summary of records of one method.

    Success: verdict ``"ts"`` (converged, one imaginary mode under the method's Hessian, IRC
    reaching both given minima). One imaginary under xTB: converged and xTB's Hessian at the
    found geometry has exactly one imaginary mode; one imaginary (exact): the same with the
    backbone's autograd Hessian (model methods). RMSD, barrier and log10 k errors are over the
    successful searches; steps and times over all.
    """
    n = len(records)
    ok = [r for r in records if r.get("success")]
    return {
        "n": n,
        "success": len(ok),
        "converged": sum(bool(r.get("converged")) for r in records),
        "xtb_one_imaginary": sum(
            bool(r.get("converged")) and r.get("xtb_saddle_index") == 1 for r in records
        ),
        "exact_one_imaginary": sum(
            bool(r.get("converged")) and r.get("exact_saddle_index") == 1 for r in records
        ),
        "exact_checked": sum(r.get("exact_saddle_index") is not None for r in records),
        "errors": sum(r.get("error") is not None for r in records),
        "median_rmsd_A": _median([r["rmsd_A"] for r in ok if r.get("rmsd_A") is not None]),
        "mae_barrier_kcal": _mae(
            [r["barrier_error_kcal"] for r in ok if r.get("barrier_error_kcal") is not None]
        ),
        "mae_log10k": _mae([r["log10k_error"] for r in ok if r.get("log10k_error") is not None]),
        "log10k_from_dG": sum(r.get("log10k_basis") == "dG" for r in ok),
        "median_steps": _median([r["steps"] for r in records if "steps" in r]),
        "model_seconds": float(sum(r.get("model_seconds", 0.0) for r in records)),
        "median_search_wall_s": _median(
            [r["search_wall_s"] for r in records if "search_wall_s" in r]
        ),
        "total_wall_s": float(sum(r.get("total_wall_s", 0.0) for r in records)),
        "verdicts": dict(
            sorted(
                {
                    v: sum(r["verdict"] == v for r in records)
                    for v in {r["verdict"] for r in records}
                }.items()
            )
        ),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """One markdown table, one row per method."""
    lines = [
        "| method | success | 1 imag. (xTB) | 1 imag. (exact) | median RMSD Å | MAE ΔE‡ kcal/mol "
        "| MAE log10 k | median steps | median search s | model time s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        n = s["n"]
        k = f" ({s['log10k_from_dG']}/{s['success']} ΔG‡)" if s["success"] else ""
        exact = f"{s['exact_one_imaginary']}/{n}" if s["exact_checked"] else "–"
        lines.append(
            f"| {METHODS[method]} | {s['success']}/{n} | {s['xtb_one_imaginary']}/{n} | {exact} "
            f"| {_fmt(s['median_rmsd_A'], '.3f')} | {_fmt(s['mae_barrier_kcal'], '.2f')} "
            f"| {_fmt(s['mae_log10k'], '.2f')}{k} | {_fmt(s['median_steps'], '.0f')} "
            f"| {_fmt(s['median_search_wall_s'], '.1f')} | {s['model_seconds']:.1f} |"
        )
    return "\n".join(lines)


def format_rows(records: Sequence[dict[str, Any]]) -> str:
    """One markdown line per search (reaction, method)."""
    lines = [
        "| reaction | atoms | method | verdict | steps | imag. modes own/exact/xTB | RMSD Å "
        "| ΔE‡ err kcal/mol | log10 k err | model s | search s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        index = "/".join(
            "–" if r.get(k) is None else str(r[k])
            for k in ("saddle_index", "exact_saddle_index", "xtb_saddle_index")
        )
        lines.append(
            f"| {r['reaction']} | {r['atoms']} | {r['label']} | {r['verdict']} "
            f"| {r.get('steps', '–')} | {index} "
            f"| {_fmt(r.get('rmsd_A'), '.3f')} | {_fmt(r.get('barrier_error_kcal'), '+.2f')} "
            f"| {_fmt(r.get('log10k_error'), '+.2f')} ({r.get('log10k_basis', '–')}) "
            f"| {_fmt(r.get('model_seconds'), '.1f')} | {_fmt(r.get('search_wall_s'), '.1f')} |"
        )
    return "\n".join(lines)


def machine_info(threads: int) -> dict[str, Any]:
    """The shared machine description (:func:`hip_head.provenance.machine_description`: CPU
    model, cores, package versions, date) with the versions this benchmark depends on and its
    torch threads."""

    info = machine_description(("mace-torch", "sella", "tblite", "ase"), device="cpu")
    return {**info, "threads": threads}


def plot(summary: dict[str, dict[str, Any]], records: Sequence[dict[str, Any]], path: Path) -> None:
    """Bars of success and of one-imaginary-under-xTB per method; a box of steps per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    labels = [METHODS[m] for m in methods]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(methods))
    width = 0.38
    frac = [summary[m]["success"] / max(summary[m]["n"], 1) for m in methods]
    imag = [summary[m]["xtb_one_imaginary"] / max(summary[m]["n"], 1) for m in methods]
    ax1.bar(x - width / 2, frac, width, label="TS + IRC connects")
    ax1.bar(x + width / 2, imag, width, label="1 imaginary mode (xTB)")
    ax1.set_xticks(x, labels)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("fraction of reactions")
    ax1.legend(fontsize=8)
    n_reactions = max((summary[m]["n"] for m in methods), default=0)
    ax1.set_title(f"{n_reactions} held-out reactions")
    steps = [[r["steps"] for r in records if r["method"] == m and "steps" in r] for m in methods]
    ax2.boxplot([s if s else [np.nan] for s in steps])
    ax2.set_xticks(range(1, len(methods) + 1), labels)
    ax2.set_ylabel("Sella steps")
    ax2.set_title("optimiser steps per search")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: Per-search fields copied into the summary JSON.
_ROW_KEYS = (
    "reaction", "method", "atoms", "verdict", "success", "converged", "steps", "saddle_index",
    "exact_saddle_index", "xtb_saddle_index", "irc_connects", "rmsd_A", "dE_kcal", "dE_ref_kcal",
    "barrier_error_kcal", "dG_kcal", "dG_ref_kcal", "log10k_error", "log10k_basis",
    "model_seconds", "search_wall_s", "total_wall_s", "error",
)  # fmt: skip


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
