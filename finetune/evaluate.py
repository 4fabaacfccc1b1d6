"""Evaluate predicted Hessians against labels: metrics, timing, plots.

:func:`evaluate_hessians` runs a :class:`~hip_head.model.HIPModel` (head or autograd Hessian)
over labelled samples one structure at a time (so the time is a per-molecule latency) and
returns the HIP/HORM metrics of :func:`~hip_head.finetune.losses.hessian_metrics`; the
per-structure Hessians and eigenvalues are kept for :func:`plot_comparison`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hip_head.errors import InvalidArgumentError
from hip_head.finetune.data import HessianSample, collate_hessian
from hip_head.finetune.losses import hessian_metrics
from hip_head.vibrations import vibrational_analysis

__all__ = [
    "Evaluation",
    "evaluate_hessians",
    "format_breakdown",
    "format_table",
    "format_kind_table",
    "group_hessian_mae",
    "metrics_by_group",
    "plot_comparison",
    "stratified_subset",
]


@dataclass
class Evaluation:
    """Metrics of one model on a set of structures.

    Attributes:
        name: label of the model (table column).
        metrics: means over structures (``hessian_mae`` eV/Å², ``eckart_eigval_mae``
            eV/Å²/amu, ``eigvec1_cos``, ``n_neg_agree``, ...; see
            :func:`~hip_head.finetune.losses.hessian_metrics`), plus ``energy_mae`` (eV),
            ``forces_mae`` (eV/Å) and ``seconds_per_structure`` (E + F + H, s).
        predicted: per structure (3N, 3N) predicted Hessians, eV/Å².
        labels: per structure (3N, 3N) label Hessians, eV/Å².
        frequencies: per structure ``(predicted, label)`` Eckart wavenumbers, cm⁻¹
            (imaginary as negative).
        per_structure: each metric per structure, in sample order (``metrics`` holds their
            means).
    """

    name: str
    metrics: dict[str, float]
    predicted: list[np.ndarray] = field(default_factory=list, repr=False)
    labels: list[np.ndarray] = field(default_factory=list, repr=False)
    frequencies: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    per_structure: dict[str, list[float]] = field(default_factory=dict, repr=False)


def evaluate_hessians(
    model: Any, samples: Sequence[HessianSample], name: str = "model"
) -> Evaluation:
    """Predict E, F and H for each sample (one at a time) and compare with its labels.

    Args:
        model: a :class:`~hip_head.model.HIPModel` (its ``hessian_method`` decides head or
            autograd); evaluated in eval mode, in its own dtype/device.
        samples: labelled structures (Hessian required; energy/forces optional).
        name: label for tables and plots.

    Returns:
        The evaluation (metrics averaged over structures).
    """
    model = model.eval()
    dtype, device = model.dtype, model.device
    per: dict[str, list[float]] = {}
    predicted, labels, freqs = [], [], []
    seconds = 0.0
    for sample in samples:
        graph, target = collate_hessian([sample], dtype=dtype)
        graph = graph.to(device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(graph, compute_forces=True, compute_hessian=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        pred_h = out["hessian"].detach().to("cpu", torch.float64)
        m = hessian_metrics(
            pred_h, target["hessian"].double(), graph.atoms_per_graph.cpu(), graph.positions.cpu(),
            graph.atomic_numbers.cpu(),
        )  # fmt: skip
        m.pop("num_structures", None)
        if "energy" in target:
            m["energy_mae"] = abs(float(out["energy"][0]) - float(target["energy"][0]))
        if "forces" in target:
            diff = out["forces"].detach().cpu().double() - target["forces"].double()
            m["forces_mae"] = float(diff.abs().mean())
        m["seconds"] = elapsed
        for key, value in m.items():
            per.setdefault(key, []).append(value)
        n3 = 3 * sample.num_atoms
        hp, ht = pred_h.numpy().reshape(n3, n3), sample.hessian_matrix()
        predicted.append(hp)
        labels.append(ht)
        atoms = sample.to_atoms()
        freqs.append(
            (
                vibrational_analysis(hp, atoms).frequencies_cm1,
                vibrational_analysis(ht, atoms).frequencies_cm1,
            )
        )
    metrics = {k: float(np.nanmean(v)) for k, v in per.items()}
    metrics["seconds_per_structure"] = seconds / max(1, len(samples))
    metrics["num_structures"] = float(len(samples))
    return Evaluation(name, metrics, predicted, labels, freqs, per_structure=per)


_ROWS = (
    ("hessian_mae", "Hessian MAE [eV/Å²]", "{:.4f}"),
    ("eckart_eigval_mae", "eigenvalue MAE, Eckart [eV/Å²/amu]", "{:.4f}"),
    ("eigval1_mae", "lowest eigenvalue MAE [eV/Å²]", "{:.4f}"),
    ("eigvec1_cos", "cos lowest eigenvector", "{:.3f}"),
    ("eckart_n_neg_agree", "n_neg agreement (Eckart)", "{:.3f}"),
    ("eckart_is_ts_agree", "saddle (n_neg = 1) agreement", "{:.3f}"),
    ("forces_mae", "force MAE [eV/Å]", "{:.4f}"),
    ("seconds_per_structure", "time per molecule, E+F+H [ms]", "ms"),
)


def format_table(evaluations: Sequence[Evaluation]) -> str:
    """A fixed-width text table with one column per evaluation (rows: the headline metrics)."""
    width = max(14, *(len(e.name) + 2 for e in evaluations))
    lines = [f"{'metric':<38}" + "".join(f"{e.name:>{width}}" for e in evaluations)]
    for key, label, fmt in _ROWS:
        cells = []
        for e in evaluations:
            value = e.metrics.get(key, float("nan"))
            cells.append(f"{value * 1e3:.1f}" if fmt == "ms" else fmt.format(value))
        lines.append(f"{label:<38}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def group_hessian_mae(
    evaluation: Evaluation, groups: Sequence[str]
) -> dict[str, tuple[int, float, float]]:
    """Hessian MAE per group of structures (e.g. per molecule and kind).

    Args:
        evaluation: a result of :func:`evaluate_hessians` on S structures.
        groups: S group labels, one per structure, in the same order.

    Returns:
        ``{group: (structures, mean per-structure MAE eV/Å², share of the overall mean)}``;
        the shares add up to 1, so they say which groups dominate ``metrics["hessian_mae"]``.
    """
    per = evaluation.per_structure["hessian_mae"]
    if len(groups) != len(per):
        raise InvalidArgumentError(f"{len(groups)} group labels for {len(per)} structures")
    total = sum(per) or 1.0
    out: dict[str, list[float]] = {}
    for group, mae in zip(groups, per, strict=True):
        out.setdefault(group, []).append(mae)
    return {g: (len(v), float(np.mean(v)), sum(v) / total) for g, v in sorted(out.items())}


def format_breakdown(evaluations: Sequence[Evaluation], groups: Sequence[str]) -> str:
    """A text table of :func:`group_hessian_mae`: per group, the count and each model's MAE
    (eV/Å²) with its share of that model's overall MAE in parentheses."""
    tables = [group_hessian_mae(e, groups) for e in evaluations]
    width = max(20, *(len(e.name) + 4 for e in evaluations))
    name_w = max(12, *(len(g) + 2 for g in tables[0]))
    lines = [f"{'group':<{name_w}}{'n':>4}" + "".join(f"{e.name:>{width}}" for e in evaluations)]
    for group, (count, _, _) in tables[0].items():
        cells = [f"{t[group][1]:.3f} ({100 * t[group][2]:.0f} %)" for t in tables]
        lines.append(f"{group:<{name_w}}{count:>4}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def stratified_subset(
    samples: Sequence[HessianSample], per_group: int, key: str = "kind", seed: int = 0
) -> list[HessianSample]:
    """At most ``per_group`` samples of each value of ``meta[key]`` (seeded), in input order.

    Rare kinds (transition states are one frame per reaction) keep all their frames up to
    ``per_group``, so a metric per kind is measured on enough structures.
    """
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        members.setdefault(str(sample.meta.get(key)), []).append(i)
    chosen: list[int] = []
    for group in sorted(members):
        idx = members[group]
        if len(idx) > per_group:
            idx = rng.choice(idx, size=per_group, replace=False).tolist()
        chosen += idx
    return [samples[i] for i in sorted(chosen)]


#: The chemist's metrics per kind of geometry: (key of ``per_structure``, label, format).
KIND_ROWS = (
    ("hessian_mae", "Hessian MAE [eV/Å²]", "{:.3f}"),
    ("eckart_eigval_mae", "Eckart eigenvalue MAE [eV/Å²/amu]", "{:.3f}"),
    ("eckart_eigval1_mae", "lowest eigenvalue MAE [eV/Å²/amu]", "{:.3f}"),
    ("eckart_eigvec1_cos", "|cos| lowest eigenvector", "{:.3f}"),
    ("eckart_n_neg_agree", "n_neg agreement", "{:.3f}"),
    ("seconds", "time per molecule [ms]", "ms"),
)


def metrics_by_group(evaluation: Evaluation, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """Every per-structure metric averaged within each group (e.g. per kind of geometry).

    Args:
        evaluation: a result of :func:`evaluate_hessians` on S structures.
        groups: S group labels, in the same order; ``"all"`` is added for every structure.

    Returns:
        ``{group: {metric: mean, "count": structures}}`` with the keys of
        ``evaluation.per_structure`` (Hessian MAE eV/Å², Eckart eigenvalues eV/Å²/amu,
        ``seconds`` per structure ...).
    """
    per = evaluation.per_structure
    n = len(next(iter(per.values()))) if per else 0
    if len(groups) != n:
        raise InvalidArgumentError(f"{len(groups)} group labels for {n} structures")
    members: dict[str, list[int]] = {"all": list(range(n))}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)
    out: dict[str, dict[str, float]] = {}
    for g, idx in members.items():
        row = {k: float(np.nanmean([v[i] for i in idx])) for k, v in per.items()}
        row["count"] = float(len(idx))
        out[g] = row
    return out


def format_kind_table(
    evaluations: Sequence[Evaluation], groups: Sequence[str], order: Sequence[str] = ()
) -> str:
    """Per group (kind of geometry) and metric, one column per model, in a text table.

    Args:
        evaluations: results of :func:`evaluate_hessians` on the same structures.
        groups: one label per structure (e.g. ``meta["kind"]``).
        order: groups listed first, in this order (the rest, then ``"all"``, follow).
    """
    tables = [metrics_by_group(e, groups) for e in evaluations]
    names = [g for g in order if g in tables[0]]
    names += sorted(g for g in tables[0] if g not in names and g != "all") + ["all"]
    width = max(12, *(len(e.name) + 2 for e in evaluations))
    lines = [
        f"{'kind':<10}{'n':>5}  {'metric':<36}" + "".join(f"{e.name:>{width}}" for e in evaluations)
    ]
    for g in names:
        count = int(tables[0][g]["count"])
        for j, (key, label, fmt) in enumerate(KIND_ROWS):
            cells = []
            for t in tables:
                value = t[g].get(key, float("nan"))
                cells.append(f"{value * 1e3:.1f}" if fmt == "ms" else fmt.format(value))
            head = f"{g:<10}{count:>5}" if j == 0 else " " * 15
            lines.append(f"{head}  {label:<36}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def plot_comparison(evaluations: Sequence[Evaluation], path: str | Path) -> Path:
    """Parity plot of Hessian entries and of vibrational wavenumbers, one panel per model.

    Args:
        evaluations: results of :func:`evaluate_hessians` on the same structures.
        path: output PNG.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = len(evaluations)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 8.0), squeeze=False)
    for j, e in enumerate(evaluations):
        pred = np.concatenate([h.ravel() for h in e.predicted])
        true = np.concatenate([h.ravel() for h in e.labels])
        ax = axes[0, j]
        ax.scatter(true, pred, s=1, alpha=0.3)
        lim = [float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_title(f"{e.name}: MAE {e.metrics['hessian_mae']:.3f} eV/Å²")
        ax.set_xlabel("label Hessian entry [eV/Å²]")
        ax.set_ylabel("predicted [eV/Å²]")
        ax = axes[1, j]
        fp = np.concatenate([f[0] for f in e.frequencies])
        ft = np.concatenate([f[1] for f in e.frequencies])
        ax.scatter(ft, fp, s=2, alpha=0.4)
        lim = [float(min(ft.min(), fp.min())), float(max(ft.max(), fp.max()))]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("label wavenumber [cm⁻¹] (imaginary < 0)")
        ax.set_ylabel("predicted [cm⁻¹]")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
