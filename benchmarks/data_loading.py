"""Time reading 10 000 frames of the shipped dataset into training batches.

Reads rows lazily from ``data/default_xtb.db`` (cycling over the file until
``--frames`` frames) with :class:`~hip_head.finetune.data.AseDbDataset` through a torch
``DataLoader`` and :func:`~hip_head.finetune.data.collate_hessian` (AtomicGraph + flat Hessian
labels), as training does. Prints frames/s and writes
``docs/benchmarks/data_loading.json``. Usage::

    .venv/bin/python benchmarks/data_loading.py [--frames 10000] [--batch-size 8] [--workers 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class _Cycle(torch.utils.data.Dataset):
    def __init__(self, dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.dataset[i % len(self.dataset)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    from hip_head.finetune.data import AseDbDataset, collate_hessian, default_dataset_path

    path = default_dataset_path()
    t0 = time.perf_counter()
    dataset = AseDbDataset(path)
    open_s = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(
        _Cycle(dataset, args.frames),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        collate_fn=collate_hessian,
        generator=torch.Generator().manual_seed(0),
    )
    t0 = time.perf_counter()
    frames = entries = 0
    for graph, labels in loader:
        frames += graph.num_graphs
        entries += labels["hessian"].numel()
    seconds = time.perf_counter() - t0
    result = {
        "file": path.name,
        "file_MB": path.stat().st_size / 1e6,
        "records": len(dataset),
        "frames": frames,
        "hessian_entries": entries,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "open_s": open_s,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
    }
    print(
        f"{frames} frames ({entries / 1e6:.1f} M Hessian entries) in {seconds:.1f} s "
        f"= {frames / seconds:.0f} frames/s (open {open_s:.2f} s; batch {args.batch_size}, "
        f"{args.workers} workers)"
    )
    out = REPO / "docs" / "benchmarks" / "data_loading.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
