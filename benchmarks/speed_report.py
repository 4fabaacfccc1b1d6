"""The speed benchmark's outputs: JSON file, markdown tables and the time / memory plot.

Both :func:`markdown` and :func:`plot` read a results dict as written to the JSON, so they
redraw files from earlier runs too (whose methods are read off their rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speed_setup import BACKBONES, LABELS, METHODS, backbone_config

__all__ = ["fmt", "markdown", "methods_of", "plot", "write_json"]

#: Table headings per method.
_HEADINGS = {
    "ef": "E+F",
    "ef_native": "bare E+F",
    "hip": "HIP E+F+H",
    "hip_blocks": "HIP blocks",
    "autograd": "autograd H",
    "fd": "FD H",
    "mace_hessian": "MACE H",
}
#: Ratio columns of the tables: name -> heading.
_RATIO_HEADINGS = {
    "hip_over_ef": "HIP / E+F",
    "hip_blocks_over_ef": "blocks / E+F",
    "autograd_over_hip": "autograd / HIP",
    "mace_hessian_over_hip": "MACE H / HIP",
}
_MARKERS = dict(ef="o", ef_native="s", hip="^", hip_blocks="P", autograd="v", fd="D")
_MARKERS["mace_hessian"] = "x"


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` through a temporary file (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def fmt(value: float | None, ratio: bool = False) -> str:
    """Compact number for tables: 3 significant figures, no exponent below 1e6; None: ``—``."""
    if value is None:
        return "—"
    if ratio:
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def methods_of(results: dict[str, Any]) -> list[str]:
    """The methods of the single-molecule rows (older files name none: read off the rows)."""
    if "methods" in results:
        return list(results["methods"])
    rows = results["rows"]
    return [m for m in METHODS if rows and f"{m}_ms" in rows[0]]


def _ratio_keys(methods: list[str]) -> list[str]:
    pairs = {"hip_over_ef": "ef", "hip_blocks_over_ef": "ef", "autograd_over_hip": "autograd"}
    pairs["mace_hessian_over_hip"] = "mace_hessian"
    keys = [k for k, other in pairs.items() if other in methods and "hip" in methods]
    return [k for k in keys if k != "hip_blocks_over_ef" or "hip_blocks" in methods]


def _batch_table(batch: dict[str, Any], methods: list[str]) -> list[str]:
    ratio_keys = [k for k in _ratio_keys(methods) if k in batch]
    low, high = batch["atoms_per_molecule"]
    lines = [
        "",
        f"Batch of {batch['molecules']} molecules of {low}-{high} atoms ({batch['atoms']} atoms "
        "in all), one call each:",
        "",
        "| | " + " | ".join(_HEADINGS[m] for m in methods) + " | "
        + " | ".join(_RATIO_HEADINGS[k] for k in ratio_keys) + " |",
        "|:---|" + "---:|" * (len(methods) + len(ratio_keys)),
        "| time (ms) | " + " | ".join(fmt(batch[f"{m}_ms"]) for m in methods) + " | "
        + " | ".join(fmt(batch[k], ratio=True) for k in ratio_keys) + " |",
        "| peak (MiB) | " + " | ".join(fmt(batch[f"{m}_peak_mb"]) for m in methods) + " |"
        + " |" * len(ratio_keys),
    ]  # fmt: skip
    return lines


def markdown(results: dict[str, Any]) -> str:
    """Markdown tables (times, ratios, peak memory) for ``docs/benchmarks.md``."""
    machine, settings = results["machine"], results["settings"]
    mace = settings.get("backbone", "mace") == "mace"
    methods = methods_of(results)
    versions = machine["versions"]
    if mace:
        packages = f"mace-torch {versions['mace-torch']}"
    else:
        package = BACKBONES[settings["backbone"]]["package"]
        packages = f"{package} {versions.get(package)}"
    ratio_keys = _ratio_keys(methods)
    lines = [
        f"Machine: {machine['cpu']} ({machine.get('gpu', 'CPU')}), {machine['cpus_usable']} "
        f"usable cores, {machine['torch_threads']} torch threads; torch "
        f"{versions['torch']}, e3nn {versions['e3nn']}, {packages}; {machine['date']}.",
        f"Backbone: {backbone_config(settings)}, {settings['dtype']} on {settings['device']}; "
        f"HIP head defaults ({machine['head']}). Median of {settings['repeats']} calls after "
        f"{settings['warmup']} warm-up calls (fewer where calls take over "
        f"{settings['repeat_budget']:g} s / {settings['warmup_budget']:g} s in all).",
        "",
        "| atoms | formula | "
        + "".join(f"{_HEADINGS[m]} (ms) | " for m in methods)
        + " | ".join(_RATIO_HEADINGS[k] for k in ratio_keys)
        + " |",
        "|---:|:---|" + "---:|" * (len(methods) + len(ratio_keys)),
    ]
    for row in results["rows"]:
        times = " | ".join(fmt(row[f"{m}_ms"]) for m in methods)
        ratios = " | ".join(fmt(row[k], ratio=True) for k in ratio_keys)
        lines.append(f"| {row['atoms']} | {row['formula']} | {times} | {ratios} |")
    lines += [
        "",
        "Peak memory above the loaded model (MiB):",
        "",
        "| atoms | " + " | ".join(_HEADINGS[m] for m in methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for row in results["rows"]:
        peaks = " | ".join(fmt(row[f"{m}_peak_mb"]) for m in methods)
        lines.append(f"| {row['atoms']} | {peaks} |")
    notes = sorted({f"{m}: {why}" for row in results["rows"] for m, why in row["skipped"].items()})
    if results.get("batch"):
        batch = results["batch"]
        lines += _batch_table(batch, list(batch["methods"]))
        notes += sorted(f"batch, {m}: {why}" for m, why in batch["skipped"].items())
    if notes:
        lines += ["", "Skipped (—):", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Log-log wall time and peak memory against atom count, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    machine, settings = results["machine"], results["settings"]
    sizes = [row["atoms"] for row in results["rows"]]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.8))
    for method in methods_of(results):
        for ax, suffix in ((ax_time, "ms"), (ax_mem, "peak_mb")):
            points = [
                (row["atoms"], row[f"{method}_{suffix}"])
                for row in results["rows"]
                if row[f"{method}_{suffix}"] is not None and row[f"{method}_{suffix}"] > 0
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker=_MARKERS[method], label=LABELS[method])
    twice_ef = [(row["atoms"], 2 * row["ef_ms"]) for row in results["rows"] if row["ef_ms"]]
    if twice_ef:
        xs, ys = zip(*twice_ef)
        ax_time.plot(xs, ys, "k:", linewidth=1, label="2 × E+F (adapter)")
    for ax, ylabel in (
        (ax_time, "wall time per call (ms)"),
        (ax_mem, "peak memory above loaded model (MiB)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("atoms")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if ax_time.get_legend_handles_labels()[0]:  # nothing measured: no legend
        ax_time.legend(fontsize=8)
    where = machine.get("gpu") or machine["cpu"]
    name = settings.get("backbone", "mace")
    model = "MACE" if name == "mace" else {"eqv2": "EquiformerV2"}.get(name, name)
    model = {"schnet": "SchNet", "visnet": "ViSNet", "uma": "UMA"}.get(model, model)
    fig.suptitle(
        f"hip-head speed: {where}, {settings['device']}, {settings['dtype']}, "
        f"{machine['torch_threads']} threads; {model} {settings['channels']} ch × "
        f"{settings['num_interactions']} layers",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
