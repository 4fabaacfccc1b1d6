"""Fine-tuning on a GPU: precision modes, step times and accuracy after longer training.

Two sub-commands::

    python benchmarks/finetune_gpu.py probe --out DIR [--device cuda] [--steps 80]
    python benchmarks/finetune_gpu.py train --out DIR --name NAME --steps N [--set k=v ...]

``probe`` fine-tunes the shipped pretrained MACE with the demo's settings for a few steps
in each precision setting (fp32 with TF32 off, fp32 with TF32 on, bf16-mixed) and in ``full``
mode, and writes ``probe.json``: milliseconds per optimizer step (median after warm-up), the
last training loss, and the device. ``train`` runs one longer fine-tune with the demo's
settings (plus ``--set`` overrides) and evaluates the HIP and, with ``--autograd``, the
backbone's autograd Hessian on the whole test split of the default dataset; it writes
``NAME.json``. Both run on CPU too (``--device cpu``), which is how this script is tested.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def demo_config(out_dir: Path, device: str, steps: int, overrides: list[str]) -> Any:
    """The demo's fine-tuning configuration (:func:`hip_head.finetune.demo.demo_settings`) on
    ``device`` with ``steps`` steps, validating and checkpointing twice, plus ``overrides``."""
    from hip_head.finetune.config import FinetuneConfig, apply_overrides
    from hip_head.finetune.demo import demo_settings

    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    base = demo_settings(out_dir, steps, accelerator=accelerator)
    base["train"] |= {
        "val_every_n_steps": max(1, steps // 2),
        "checkpoint_every_n_steps": max(1, steps // 2),
        "progress_bar": False,
    }
    return FinetuneConfig.from_dict(apply_overrides(base, overrides))


def step_timer() -> Any:
    """A Lightning callback that records each training batch's wall time (s, synchronised on
    CUDA) in ``.times`` and its loss in ``.losses``."""
    import lightning.pytorch as pl

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []
            self._t0 = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            sync()
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            sync()
            self.times.append(time.perf_counter() - self._t0)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss))

    return StepTimer()


def machine() -> dict[str, Any]:
    """The shared machine description (:func:`hip_head.provenance.machine_description`): CPU,
    cores, torch and package versions, the GPU's name when CUDA is available, date."""
    from hip_head.provenance import machine_description

    return machine_description()


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Step time and last loss in each precision setting."""
    from hip_head.finetune.train import run_finetune

    settings = [
        ("head fp32, tf32 off", ["train.precision=32-true", "train.tf32=false"]),
        ("head fp32, tf32 on", ["train.precision=32-true", "train.tf32=true"]),
        ("head bf16-mixed", ["train.precision=bf16-mixed", "train.tf32=false"]),
        ("full fp32, tf32 off", ["train.mode=full", "train.precision=32-true", "train.tf32=false"]),
    ]
    rows = []
    for i, (name, overrides) in enumerate(settings):
        timer = step_timer()
        config = demo_config(args.out / f"probe{i}", args.device, args.steps, args.set + overrides)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"setting": name}
        try:
            result = run_finetune(config, callbacks=[timer])
            warm = timer.times[min(10, len(timer.times) // 2) :]
            row |= {
                "ms_per_step_median": 1e3 * statistics.median(warm),
                "steps": result.global_step,
                "last_loss": timer.losses[-1],
                "first_loss": timer.losses[0],
                "val_hessian_mae": result.metrics.get("val/hessian_mae"),
                "wall_s": time.perf_counter() - t0,
            }
            if torch.cuda.is_available():
                row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
                torch.cuda.reset_peak_memory_stats()
        except Exception as exc:  # noqa: BLE001 - a failing setting is a result to report
            row["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"machine": machine(), "probe_steps": args.steps, "rows": rows}


def train(args: argparse.Namespace) -> dict[str, Any]:
    """One longer fine-tune, evaluated on the whole test split."""
    import lightning.pytorch as pl

    import hip_head
    from hip_head.finetune.data import open_source
    from hip_head.finetune.evaluate import evaluate_hessians
    from hip_head.finetune.train import load_backbone, run_finetune

    timer = step_timer()
    config = demo_config(args.out / args.name, args.device, args.steps, args.set)
    callbacks: list[Any] = [timer]
    if args.max_time_s:  # a safety net: stop (and still save and evaluate) after this long
        callbacks.append(pl.callbacks.Timer(duration={"seconds": args.max_time_s}))
    result = run_finetune(config, callbacks=callbacks)
    source = open_source("default", config.data)
    test = [source[i] for i, s in enumerate(source.column("split")) if s == "test"]
    if args.test_frames:
        from hip_head.finetune.demo import test_subset

        test = test_subset(test, args.test_frames, 0)
    device = torch.device(args.device)
    hip = hip_head.load(result.model_path).to(device)
    evals = {"hip": evaluate_hessians(hip, test, "HIP").metrics}
    if args.autograd:
        backbone = load_backbone("default").to(hip.dtype)
        autograd = hip_head.wrap(backbone, hessian="autograd").to(device)
        evals["autograd"] = evaluate_hessians(autograd, test, "autograd").metrics
    out = {
        "name": args.name,
        "overrides": args.set,
        "steps": result.global_step,
        "train_s": result.seconds,
        "ms_per_step_median": 1e3 * statistics.median(timer.times[10:] or timer.times),
        "train_loss_last100": statistics.mean(timer.losses[-100:]),
        "test_frames": len(test),
        "metrics": {k: {m: float(v) for m, v in e.items()} for k, e in evals.items()},
        "machine": machine(),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("probe", "train"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--steps", type=int, default=80)
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
        p.add_argument("--name", default="run")
        p.add_argument("--autograd", action="store_true")
        p.add_argument("--test-frames", type=int, default=0, help="0: the whole test split")
        p.add_argument("--max-time-s", type=float, default=0, help="stop training after this")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = probe(args) if args.command == "probe" else train(args)
    path = args.out / ("probe.json" if args.command == "probe" else f"{args.name}.json")
    path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
