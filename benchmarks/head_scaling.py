#!/usr/bin/env python
"""Time the HIP head alone against the number of pairs it reads.

For each size, the molecule of ``benchmarks/speed.py`` (``speed_molecules.organic_molecule``)
goes once through the speed benchmark's default backbone (``speed_setup.build_backbone`` with
default ``Settings``: random ScaleShiftMACE, 64 channels, 2 layers, max_ell 3, correlation 3,
float32) to get its node features; then the head's own work is timed
under ``torch.no_grad()``: the pair search within ``hessian_cutoff``, the readout and the
block-sparse assembly (:class:`~hip_head.assemble.BlockSparseHessian`). The first call is a
warm-up; the median of the others is reported with the time per pair (µs). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/head_scaling.py --sizes 1000 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000], help="atoms")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    import torch
    from speed_molecules import organic_molecule
    from speed_setup import Settings, build_backbone

    import hip_head
    from hip_head.assemble import BlockSparseHessian
    from hip_head.graph import AtomicGraph, build_pair_graph

    torch.set_num_threads(args.threads)
    hip = hip_head.wrap(build_backbone(Settings(sizes=args.sizes)))
    cutoff = hip.readout.hessian_cutoff
    print(f"head alone, cutoff {cutoff} Å, {args.threads} thread(s), float32")
    print(f"{'atoms':>6} {'pairs':>10} {'median s':>9} {'µs/pair':>8}")
    for size in args.sizes:
        graph = AtomicGraph.from_ase([organic_molecule(size, seed=0)], dtype=torch.float32)
        with torch.no_grad():
            features = hip.run_backbone(graph).node_feats
            seconds = []
            for _ in range(args.repeats + 1):
                start = time.perf_counter()
                pairs = build_pair_graph(graph, cutoff)
                BlockSparseHessian.from_blocks(hip.readout(features, graph, pairs), graph)
                seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds[1:])
        per_pair = 1e6 * median / pairs.num_pairs
        print(f"{size:>6} {pairs.num_pairs:>10} {median:>9.3f} {per_pair:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
