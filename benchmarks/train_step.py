"""Cost of one fine-tuning step with and without the Hessian loss (design bound: 2x an E/F step).

Times forward + loss + backward + AdamW step of :class:`HIPLightningModule` on real batches of
the shipped dataset (train split), for:

- ``E+F (full)``: energy and force loss, backbone trained (what pretraining an MLIP costs);
- ``E+F+H head (full)``: the same plus the HIP head's Hessian loss (fine-tuning the whole HIP);
- ``H head (frozen backbone)``: the HIP paper's setting, only the head trains;
- ``E+F+H autograd rows (full)``: the HORM-style baseline, 4 random Hessian rows per molecule
  through double backprop.

Writes ``docs/benchmarks/train_step_<device>.json`` and prints a table. Usage::

    .venv/bin/python benchmarks/train_step.py [--device cpu|cuda] [--batch-size 8] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "E+F (full)": {"train": {"mode": "full"}, "loss": {"hessian": 0.0}},
    "E+F+H head (full)": {"train": {"mode": "full"}},
    "H head (frozen backbone)": {"train": {"mode": "head"}},
    "E+F+H autograd rows (full)": {"train": {"mode": "full", "target": "autograd"}},
}


def _config(case: dict, args: argparse.Namespace):
    from hip_head.finetune.config import FinetuneConfig

    raw = {
        "model": {"backbone": args.backbone, "dtype": args.dtype},
        "data": {"train": ["default"], "batch_size": args.batch_size},
        "optim": {"ema_decay": 0.99},
        "train": {"out_dir": "/tmp/unused", "accelerator": args.device},
    }
    for section, values in case.items():
        raw.setdefault(section, {}).update(values)
    return FinetuneConfig.from_dict(raw)


def time_case(name: str, args: argparse.Namespace, batches: list) -> dict:
    """Median seconds per optimizer step of one case over ``args.steps`` steps (after 2)."""
    from hip_head.finetune.module import HIPLightningModule
    from hip_head.finetune.train import build_model

    config = _config(CASES[name], args)
    device = torch.device(args.device)
    module = HIPLightningModule(build_model(config), config).to(device)
    module.model.train()
    if config.train.mode == "head":
        module.model.backbone.eval()
    optimizer = module.configure_optimizers()["optimizer"]
    times = []
    for step in range(args.steps + 2):
        graph, labels = batches[step % len(batches)]
        graph = graph.to(device=device)
        labels = {k: v.to(device) for k, v in labels.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = module._loss(graph, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if module.ema is not None:
            module.ema.update(module.model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "steps": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="default")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from hip_head.finetune.config import DataConfig
    from hip_head.finetune.data import collate_hessian, open_source
    from hip_head.provenance import machine_description

    source = open_source("default", DataConfig())
    train = [i for i, s in enumerate(source.column("split")) if s == "train"]
    gen = torch.Generator().manual_seed(0)
    order = [train[i] for i in torch.randperm(len(train), generator=gen).tolist()]
    dtype = getattr(torch, args.dtype)
    batches = [
        collate_hessian([source[j] for j in order[i : i + args.batch_size]], dtype=dtype)
        for i in range(0, args.batch_size * 6, args.batch_size)
    ]
    atoms = sum(b[0].num_atoms for b in batches) / len(batches)
    results = {name: time_case(name, args, batches) for name in CASES}
    base = results["E+F (full)"]["median_s"]
    print(
        f"device {args.device}, {args.dtype}, batch {args.batch_size} molecules "
        f"(~{atoms:.0f} atoms), backbone {args.backbone}"
    )
    for name, r in results.items():
        r["vs_EF"] = r["median_s"] / base
        print(f"{name:<30} {r['median_s'] * 1e3:8.1f} ms/step   {r['vs_EF']:5.2f}x E+F")
    info = {
        "device": args.device,
        "machine": platform.machine(),
        **machine_description(device=args.device),  # cpu, cpu_count, torch, versions, [gpu]
        "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "mean_atoms_per_batch": atoms,
        "backbone": args.backbone,
        "results": results,
    }
    out = args.out or REPO / "docs" / "benchmarks" / f"train_step_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
