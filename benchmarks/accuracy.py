"""Hessian accuracy at equal wall clock: autograd baselines against HIP, on held-out reactions.

Every trained row starts from the same backbone (``--backbone``, a MACE trained on energies
and forces) and trains for the same wall time (``--minutes``) on the same data (the train
splits of the default, extra and reaction sets), one process, this machine: a short probe run
times each row's steady-state steps, the row then trains for that many steps (its learning-rate
schedule ends on time) with ``train.max_minutes`` as a hard stop. Run it on an otherwise idle
machine: rows timed under different loads are not comparable.

- ``(a) E/F backbone, autograd``: the backbone as given, its exact autograd Hessian.
- ``(a') E/F continued, autograd``: the backbone trained ``--minutes`` more on energies and
  forces only: the control for the joint-training claim (same time, no Hessian data).
- ``(b) HORM-style autograd rows``: the backbone trained on energies, forces and
  ``loss.autograd_rows`` random rows of its own autograd Hessian per structure
  (``train.target: autograd``), evaluated with its autograd Hessian.
- ``(c) HIP head-only``: a HIP head on the frozen backbone (entrywise Hessian MAE plus the
  subspace loss on the 4 lowest label eigenpairs, as the shipped HIP).
- ``(d) HIP full (joint)``: backbone and head trained together on E, F and the head's Hessian
  (same Hessian terms).

All are evaluated on the reaction test split (molecules in no training set), at most
``--per-kind`` frames of each kind (ts / irc / minimum / thermal): Hessian MAE, Eckart
eigenvalue MAE, lowest eigenvalue MAE, |cos| of the lowest eigenvector, n_neg agreement,
energy and force MAE, time per molecule. Writes ``docs/benchmarks/accuracy_<device>.json``
and prints the tables. Usage::

    .venv/bin/python benchmarks/accuracy.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["default", "extra", "reactions"]

#: Trained rows: config sections changed from the common base.
ROWS: dict[str, dict[str, Any]] = {
    "(a') E/F continued, autograd": {
        "train": {"mode": "full"},
        "loss": {"hessian": 0.0, "subspace": 0.0},
    },
    "(b) HORM-style autograd rows": {"train": {"mode": "full", "target": "autograd"}},
    "(c) HIP head-only": {
        "train": {"mode": "head"},
        "optim": {"lr": 1.5e-2},
        "loss": {"subspace": 5.0, "subspace_k": 4},
    },
    "(d) HIP full (joint)": {
        "train": {"mode": "full"},
        "optim": {"lr": 1.5e-2},
        "loss": {"subspace": 5.0, "subspace_k": 4},
    },
}
#: Rows whose Hessian is the backbone's autograd one.
AUTOGRAD_ROWS = ("(a) E/F backbone, autograd", "(a') E/F continued, autograd",
                 "(b) HORM-style autograd rows")  # fmt: skip


def row_config(name: str, args: argparse.Namespace, out: Path, steps: int) -> dict[str, Any]:
    """The raw configuration of one trained row."""
    raw: dict[str, Any] = {
        "model": {"backbone": str(args.backbone), "dtype": "float32",
                  "head": {"channels": 32, "num_interactions": 2}},
        "data": {"train": TRAIN, "batch_size": args.batch_size, "max_val_frames": 32},
        "optim": {"lr": 2e-3, "backbone_lr": 1e-4, "warmup_steps": 50, "ema_decay": 0.995},
        "loss": {"energy": 1.0, "forces": 25.0, "hessian": 10.0},
        "train": {"max_steps": steps, "max_minutes": args.minutes,
                  "val_every_n_steps": max(1, steps // 2), "checkpoint_every_n_steps": 500,
                  "log_every_n_steps": 50, "out_dir": str(out), "accelerator": args.device,
                  "devices": 1, "seed": args.seed, "progress_bar": False},
    }  # fmt: skip
    for section, values in ROWS[name].items():
        raw[section].update(values)
    return raw


class _StepClock:
    """Lightning callback: wall time of every optimizer step after the first ``skip``."""

    def __init__(self, skip: int = 5) -> None:
        self.skip, self.times = skip, []

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step > self.skip:
            self.times.append(time.perf_counter())


def steps_per_minute(name: str, args: argparse.Namespace, work: Path) -> float:
    """Optimizer steps per minute of a row in steady state (a short run; start-up, data
    loading and the first steps excluded)."""
    from lightning.pytorch.callbacks import Callback

    from hip_head.finetune.config import FinetuneConfig
    from hip_head.finetune.train import run_finetune

    clock = type("StepClock", (_StepClock, Callback), {})()
    raw = row_config(name, args, work / "probe", 40)
    raw["train"].update(max_minutes=None, val_every_n_steps=10_000, checkpoint_every_n_steps=10_000)
    run_finetune(FinetuneConfig.from_dict(raw), callbacks=[clock])
    if len(clock.times) < 2:
        raise RuntimeError(f"{name}: the probe run made too few steps to time")
    return 60.0 * (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbone",
        default="pretrained",
        help="backbone file, or 'pretrained': the backbone of the shipped HIP",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per row")
    parser.add_argument("--per-kind", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "build/accuracy")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default docs/benchmarks)")
    args = parser.parse_args(argv)

    import shutil

    import torch

    import hip_head
    from hip_head.finetune.config import DataConfig, FinetuneConfig
    from hip_head.finetune.data import open_source
    from hip_head.finetune.evaluate import (
        evaluate_hessians,
        format_kind_table,
        format_table,
        metrics_by_group,
        stratified_subset,
    )
    from hip_head.finetune.train import load_backbone, run_finetune
    from hip_head.model import HIPModel
    from hip_head.provenance import machine_description

    torch.set_num_threads(1)
    if args.backbone == "pretrained":
        from hip_head.serialization import save_backbone

        args.work.mkdir(parents=True, exist_ok=True)
        args.backbone = args.work / "pretrained_backbone.model"
        save_backbone(hip_head.load("pretrained").backbone, args.backbone)
    source = open_source("reactions", DataConfig())
    rows = [i for i, s in enumerate(source.column("split")) if s == "test"]
    test = stratified_subset([source[i] for i in rows], args.per_kind, seed=args.seed)
    kinds = [str(s.meta["kind"]) for s in test]

    models: dict[str, Any] = {}
    backbone = load_backbone(str(args.backbone)).float()
    models[AUTOGRAD_ROWS[0]] = hip_head.wrap(backbone, hessian="autograd")
    training: dict[str, Any] = {}
    for name in ROWS:
        out = args.work / name.split(")")[0].strip("(").replace("'", "p")
        shutil.rmtree(out, ignore_errors=True)
        rate = steps_per_minute(name, args, out)
        steps = max(10, int(rate * args.minutes))  # the schedule ends near the time limit
        print(f"{name}: {rate:.0f} steps/min -> {steps} steps in {args.minutes} min", flush=True)
        config = FinetuneConfig.from_dict(row_config(name, args, out / "run", steps))
        result = run_finetune(config)
        trained = hip_head.load(result.model_path)
        if name in AUTOGRAD_ROWS:
            trained = HIPModel(trained.adapter, trained.readout, hessian="autograd").eval()
        models[name] = trained
        training[name] = {"steps": result.global_step, "seconds": result.seconds,
                          "planned_steps": steps, "steps_per_minute": rate}  # fmt: skip

    evals = [evaluate_hessians(m, test, name) for name, m in models.items()]
    print(format_table(evals))
    print(format_kind_table(evals, kinds, ("ts", "irc", "minimum", "thermal")))
    report = {
        "test": {
            "frames": len(test),
            "reactions": len({s.meta["reaction"] for s in test}),
            "molecules": len({s.meta["molecule"] for s in test}),
        },  # fmt: skip
        "minutes_per_row": args.minutes,
        "backbone": str(args.backbone),
        "training": training,
        "rows": {e.name: metrics_by_group(e, kinds) for e in evals},
        "machine": {**machine_description(device=args.device), "device": args.device, "threads": 1},
        "date": time.strftime("%Y-%m-%d"),
    }
    out = args.out or REPO / "docs" / "benchmarks" / f"accuracy_{args.device}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
