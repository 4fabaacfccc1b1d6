"""``make demo`` / ``hip demo``: the shipped HIP against its backbone's autograd Hessian, on CPU.

1. Load the shipped trained HIP (``hip_head.load("pretrained")``: a small MACE with a HIP
   head trained on GFN2-xTB Hessians, reactions included). Without it, a head is trained
   from scratch on the shipped data instead (the demo says so).
2. Fine-tune it briefly on the reaction set's train split (``--steps``): the loop a user runs
   on their own Hessian data, from a trained HIP (``model.init``).
3. Compare, on held-out reactions (the reaction test split: molecules no training set has
   seen), the shipped HIP, the briefly fine-tuned one and the backbone's own exact autograd
   Hessian, per kind of geometry (ts / irc / minimum / thermal): Hessian MAE, Eckart
   eigenvalue MAE, lowest eigenvalue MAE, |cos| of the lowest eigenvector, agreement of the
   number of negative modes, time per molecule. Then the same on unseen molecules larger than
   those of the reaction set (minima and thermal frames).
4. Write a parity/frequency plot and the fine-tuned model; print how to use them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CONTINUATION_LOSS", "KIND_ORDER", "demo_settings", "run_demo", "test_subset"]

#: Kinds of geometry in the order the tables list them.
KIND_ORDER = ("ts", "irc", "minimum", "thermal")

#: The loss of a continuation from a trained HIP: entrywise MAE, the subspace term and the sign
#: hinge on the lowest vibrational eigenvalues; the last stage of the shipped HIP's training
#: (``scripts/train_hip.py``) uses it too (the entrywise MAE alone lets spurious imaginary modes
#: back in; docs/finetuning.md, "Training the saddle index").
CONTINUATION_LOSS: dict[str, Any] = {
    "hessian": 10.0,
    "subspace": 5.0,
    "subspace_k": 4,
    "terms": {"mode_sign": {"weight": 5.0, "k": 4}},
}


def test_subset(samples: list[Any], limit: int, seed: int = 0) -> list[Any]:
    """At most ``limit`` samples, the same share of each ``meta["kind"]`` (seeded)."""
    if len(samples) <= limit:
        return samples
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_kind.setdefault(str(s.meta.get("kind")), []).append(i)
    chosen: list[int] = []
    for kind in sorted(by_kind):
        idx = by_kind[kind]
        take = max(1, round(limit * len(idx) / len(samples)))
        chosen += rng.choice(idx, size=min(take, len(idx)), replace=False).tolist()
    return [samples[i] for i in sorted(chosen)[:limit]]


def demo_settings(
    out_dir: str | Path,
    max_steps: int = 5000,
    batch_size: int = 4,
    seed: int = 0,
    backbone: str = "default",
    accelerator: str = "cpu",
    init: str | None = None,
    train: tuple[str, ...] = ("default", "extra", "reactions"),
) -> dict[str, Any]:
    """The demo's fine-tuning configuration as a raw dict (for :class:`FinetuneConfig`).

    Head mode on the frozen backbone; a 32-channel, 2-layer head; peak lr 1.5e-2 (3e-2
    scored about as well on the default data but diverged once in a 4000-step run, 3e-3 is
    far worse; docs/finetuning.md). With ``init`` (a saved HIP) training continues from it at
    a tenth of that lr, with a short warm-up and :data:`CONTINUATION_LOSS`.
    """
    return {
        "model": {
            "backbone": None if init else backbone,
            "init": init,
            "dtype": "float32",
            "head": {} if init else {"channels": 32, "num_interactions": 2},
        },
        "data": {"train": list(train), "batch_size": batch_size, "max_val_frames": 64},
        "loss": dict(CONTINUATION_LOSS) if init else {},
        "optim": {
            "lr": 1.5e-3 if init else 1.5e-2,
            "warmup_steps": 10 if init else 50,
            "ema_decay": 0.995 if max_steps > 400 else 0.9,
        },
        "train": {
            "mode": "head",
            "max_steps": max_steps,
            "val_every_n_steps": max(1, max_steps // 3),
            "checkpoint_every_n_steps": 250,
            "log_every_n_steps": 25,
            "out_dir": str(out_dir),
            "accelerator": accelerator,
            "devices": 1,
            "seed": seed,
            "progress_bar": False,
        },
    }


def _autograd_twin(hip: Any) -> Any:
    """A HIPModel sharing ``hip``'s backbone that returns the backbone's exact Hessian."""
    from hip_head.model import HIPModel

    return HIPModel(hip.adapter, hip.readout, hessian="autograd").eval()


def _held_out(name: str, per_kind: int, seed: int) -> list[Any]:
    """The test rows of a shipped dataset, at most ``per_kind`` per kind."""
    from hip_head.finetune.config import DataConfig
    from hip_head.finetune.data import open_source
    from hip_head.finetune.evaluate import stratified_subset

    source = open_source(name, DataConfig())
    rows = [i for i, s in enumerate(source.column("split")) if s == "test"]
    return stratified_subset([source[i] for i in rows], per_kind, seed=seed)


def _compare(models: dict[str, Any], samples: list[Any], title: str) -> list[Any]:
    from hip_head.finetune.evaluate import evaluate_hessians, format_kind_table

    kinds = [str(s.meta.get("kind")) for s in samples]
    molecules = sorted({str(s.meta.get("molecule")) for s in samples})
    evals = [evaluate_hessians(m, samples, name) for name, m in models.items()]
    print(f"\n{title}: {len(samples)} frames of {len(molecules)} molecules")
    print(format_kind_table(evals, kinds, KIND_ORDER))
    return evals


def run_demo(
    out_dir: str | Path = "runs/demo",
    max_steps: int = 300,
    batch_size: int = 4,
    per_kind: int = 30,
    seed: int = 0,
    model: str = "pretrained",
    backbone: str = "default",
    large_per_kind: int = 20,
) -> int:
    """Run the demo. Returns 0 when it ran (the tables say how HIP compares).

    Args:
        out_dir: parent of the run directory (a new time-stamped one each run).
        max_steps: fine-tuning steps (from the shipped HIP; from scratch without one).
        batch_size: structures per step.
        per_kind: held-out reaction frames evaluated per kind of geometry.
        seed: seed of training and of the evaluated subsets.
        model: a saved HIP to start from, or ``"pretrained"`` (the shipped one).
        backbone: backbone used only when no HIP is found (``"default"``: the shipped MACE).
        large_per_kind: unseen-larger-molecule frames evaluated per kind.
    """
    import torch

    import hip_head
    from hip_head.finetune.config import FinetuneConfig
    from hip_head.finetune.evaluate import plot_comparison
    from hip_head.finetune.train import run_finetune

    # one thread: molecules are small, and on a shared 2-core machine a second thread makes
    # small matmuls 10-100x slower (measured); set OMP_NUM_THREADS/torch threads to change it
    torch.set_num_threads(1)
    run = Path(out_dir) / time.strftime("%Y%m%d-%H%M%S")
    print(f"hip-head {hip_head.__version__} demo, run dir {run}")
    try:
        shipped = hip_head.load(model)
        start = str(model if model != "pretrained" else _shipped_path())
        print(f"HIP: {model} ({start})")
    except FileNotFoundError as exc:
        shipped, start = None, None
        print(f"no trained HIP found ({exc}); training a new head on the shipped backbone")

    config = FinetuneConfig.from_dict(
        demo_settings(run, max_steps, batch_size, seed, backbone, init=start,
                      train=("reactions",) if start else ("default", "extra", "reactions"))
    )  # fmt: skip
    what = "continue training it" if start else "train a head"
    print(f"{what} for {max_steps} steps of {batch_size} on the reaction train split ...")
    t0 = time.perf_counter()
    result = run_finetune(config)
    print(f"... {result.global_step} steps in {time.perf_counter() - t0:.0f} s")
    tuned = hip_head.load(result.model_path)

    reference = shipped if shipped is not None else tuned
    models = {"MACE autograd": _autograd_twin(reference)}
    if shipped is not None:
        models["HIP shipped"] = shipped
    models[f"HIP +{max_steps} steps" if shipped is not None else "HIP demo"] = tuned

    reactions = _held_out("reactions", per_kind, seed)
    evals = _compare(
        models, reactions, "held-out reactions (reaction test split, unseen molecules)"
    )
    auto, hip = evals[0].metrics, evals[1].metrics
    ratio = auto["hessian_mae"] / hip["hessian_mae"]
    speed = auto["seconds_per_structure"] / hip["seconds_per_structure"]
    word = "lower" if ratio >= 1 else "HIGHER"
    print(
        f"\n{evals[1].name}: Hessian MAE {max(ratio, 1 / ratio):.2f}x {word} than the "
        f"backbone's autograd Hessian on held-out reactions, {speed:.1f}x faster per molecule "
        "(E + F + H, CPU, one at a time)"
    )
    try:
        large = _held_out("unseen_large", large_per_kind, seed)
    except FileNotFoundError as exc:
        print(f"(no unseen-larger-molecule set: {exc})")
    else:
        _compare(models, large, "unseen molecules of 15-26 atoms (minima and thermal frames)")
    plot = plot_comparison(evals, run / "parity.png")
    print(f"\nplots: {plot}   fine-tuned model: {result.model_path}   logs: {run / 'logs'}")
    print("\nuse it:")
    print("    import hip_head")
    print('    hip = hip_head.load("pretrained")   # or the fine-tuned file above')
    print("    out = hip.predict(atoms)  # energy eV, forces eV/Å, hessian (3N, 3N) eV/Å²")
    return 0


def _shipped_path() -> Path:
    from hip_head.assets import asset_path
    from hip_head.model import SHIPPED_MODELS

    return asset_path(SHIPPED_MODELS["pretrained"])
