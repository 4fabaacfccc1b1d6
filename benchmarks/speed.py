#!/usr/bin/env python
"""Speed benchmark: HIP's one-pass Hessian against the backbone's E+F and exact Hessians.

For each molecule size the same backbone (by default a random ``ScaleShiftMACE`` from
:func:`hip_head.adapters.mace.make_random_mace`; ``--backbone`` picks another, see
``speed_setup.BACKBONES``) is timed, on the same machine in one run, as

* ``ef``: energy + forces through hip-head's adapter, ``hip(graph, compute_hessian=False)``;
* ``ef_native``: energy + forces of the bare backbone, ``adapter.native_energy_forces(graph)``;
* ``hip``: energy + forces + Hessian with the HIP head, ``hip(graph)`` (flat Hessian, skipped
  above ``--max-flat-atoms``: it holds (3N)² numbers);
* ``hip_blocks``: the same with block-sparse output, ``hip(graph, hessian_output="blocks")``
  (3x3 blocks of the head's pairs only, no (3N)² array: the path for thousands of atoms);
* ``autograd``: energy + forces + exact Hessian by batched (vmap) VJPs,
  ``hip_head.wrap(backbone, hessian="autograd")(graph)``;
* ``fd``: Hessian by central differences of the bare model's forces (6N E+F calls),
  :func:`hip_head.autograd.finite_difference_hessian`;
* ``mace_hessian`` (MACE only): MACE's own ``model(data, compute_force=True,
  compute_hessian=True)`` on the adapter's ``input_dict`` (torch's default dtype set to the
  model's, as MACE's calculator does).

``--batch-small`` also times one batch of small molecules (default 64 molecules of 10-30 atoms,
``--batch-molecules``, ``--batch-atoms``) with ``ef``, ``ef_native``, ``hip``, ``hip_blocks``
and ``autograd`` (its ``--max-autograd-atoms`` limit applies to the largest molecule): the
JSON's ``batch`` entry and a table of its own.

Other backbones (``--backbone schnet | visnet | uma | eqv2``) are random models of a realistic
size (``speed_setup.BACKBONES``, overridable with ``--channels``, ``--num-interactions``,
``--max-ell``) built with the shipped builders (torch-geometric's constructors,
``make_random_uma``, ``make_random_equiformer_v2``); they run every method but ``mace_hessian``
and write ``speed_cpu_<backbone>.{json,png}``. UMA needs fairchem-core 2.x (``.venv-fairchem``),
EquiformerV2 fairchem-core 1.x (``.venv-eqv2``).

Every call includes building the neighbour list / input dictionary, as a user pays for it.
Each method is first called untimed at the same size, up to ``--warmup`` times (default 3: e3nn
and MACE run TorchScript, whose profiling executor profiles on the first call and optimises on
the second, so the third call is the first steady one) but no more once those calls have taken
``--warmup-budget`` seconds; ``fd`` warms up with the bare E+F it consists of. Warming up on a
smaller molecule instead would be cheaper but is not steady: TorchScript specialises on shapes
(in one test an autograd Hessian warmed up at 3 atoms stayed ~40 % slower at 10). Then it is timed
``--repeats`` times, fewer once the timed calls have taken ``--repeat-budget`` seconds (at least
once), and the median is reported.

Peak memory (``*_peak_mb``, MiB) is the growth of the process's resident set during the timed
calls, above the resident set right before them (model, molecule and warm-up already in
memory). On CPU each measurement runs in a fresh child process: a helper process imports torch
and builds the models and molecules once with one thread (so OpenMP has no thread pool yet),
then forks one child per (size, method); the child sets the thread count, builds the graph,
warms up, releases freed heap (``malloc_trim``), resets the kernel's high-water mark
(``/proc/self/clear_refs``), reads ``VmRSS``, runs the timed calls and reads ``VmHWM``. Without
``clear_refs`` the child's high-water mark since the fork is used and the warm-up is counted.
The helper kills a child that runs past ``--timeout`` seconds or whose resident set passes
``--memory-limit`` GiB (default 80 % of the memory available at the start); the method is then
reported as skipped with the reason, and the run goes on (so do the edge and pair counts of a
size, counted in a child too). On CUDA the measurements run in this process and peak memory is
``torch.cuda.max_memory_allocated`` above the allocation before the timed calls.

Molecules are saturated, acyclic H/C/N/O molecules made by a deterministic generator (no
network, no RDKit): heavy atoms grow on a diamond lattice (1.54 Å bonds, tetrahedral angles,
staggered dihedrals), each time on the free site nearest the centroid (seeded jitter breaks
ties), so the molecule is a compact globule with the atom density of a liquid alkane (about 45
neighbours within 5 Å at 200 atoms): the worst case for the head's pair graph (12 Å), whose
pair count grows as N² up to about 100 atoms. About one heavy atom in eight is O and one in
eight is N; one or two extra N/O make the atom count exact (3 atoms: H2O, 5: CH4, 9: C2H6O,
20: C6H14). No two heavy atoms share an empty lattice site, so no two hydrogens point at the
same site: bonds are 0.96 to 1.54 Å, non-bonded H···H 1.89 Å or more (checked for 30 to 200
atoms); every molecule is checked for atoms closer than 0.9 Å.

The code is split by concern into sibling modules: ``speed_molecules`` (the structures),
``speed_setup`` (methods, backbones, settings), ``speed_measure`` (timing and peak memory),
``speed_isolation`` (in-process or forked children under the time and memory guards) and
``speed_report`` (JSON, markdown, plot); this file is the command line and the run.

Run ``python benchmarks/speed.py --help``; the JSON, plot and markdown tables go to
``docs/benchmarks/``, where ``docs/benchmarks.md`` quotes them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling speed_* modules

from speed_isolation import default_memory_limit_gb, zygote_main  # noqa: E402
from speed_molecules import composition, organic_molecule, small_molecule_batch  # noqa: E402
from speed_report import markdown, plot  # noqa: E402
from speed_run import machine_info, run_benchmark, skip_reason  # noqa: E402
from speed_setup import BACKBONES, METHODS, Settings  # noqa: E402

__all__ = [
    "BACKBONES",
    "METHODS",
    "Settings",
    "composition",
    "machine_info",
    "main",
    "markdown",
    "organic_molecule",
    "parse_args",
    "plot",
    "run_benchmark",
    "skip_reason",
    "small_molecule_batch",
]

REPO = Path(__file__).resolve().parents[1]


def _limit(text: str) -> int | None:
    """``--max-*-atoms`` value: an int, or ``none`` for no limit."""
    return None if text.lower() in ("none", "inf") else int(text)


def _gib(text: str) -> float | None:
    """``--memory-limit`` value: GiB; ``none`` for no limit; ``auto``: 80 % of what is free."""
    if text.lower() == "auto":
        return default_memory_limit_gb()
    return None if text.lower() in ("none", "inf") else float(text)


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """The size limits and guards of ``parse_args``."""
    parser.add_argument(
        "--max-autograd-atoms",
        type=_limit,
        default=30,
        help="skip the autograd Hessian above this ('none': never); ~5 GB and 25 s at 30 "
        "atoms, 64 channels",
    )
    parser.add_argument(
        "--max-fd-atoms", type=_limit, default=60, help="skip finite differences above this"
    )
    parser.add_argument(
        "--max-mace-hessian-atoms",
        type=_limit,
        default=60,
        help="skip MACE's compute_hessian above this",
    )
    parser.add_argument(
        "--max-flat-atoms",
        type=_limit,
        default=2000,
        help="skip the flat HIP Hessian above this ((3N)² numbers); hip_blocks still runs",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per measurement (process mode)"
    )
    parser.add_argument(
        "--memory-limit",
        type=_gib,
        default="auto",
        help="GiB of resident set per measurement before it is stopped and reported "
        "(process mode; 'none': no limit; 'auto': 80%% of the memory available at start)",
    )


def _add_batch(parser: argparse.ArgumentParser) -> None:
    """The batch-of-small-molecules options of ``parse_args``."""
    parser.add_argument(
        "--batch-small",
        action="store_true",
        help="also time one batch of small molecules (E+F, HIP, HIP blocks, autograd H)",
    )
    parser.add_argument("--batch-molecules", type=int, default=64, help="molecules in that batch")
    parser.add_argument(
        "--batch-atoms",
        type=int,
        nargs=2,
        default=[10, 30],
        metavar=("MIN", "MAX"),
        help="atoms per molecule of that batch (drawn uniformly, seeded)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description="Time HIP's E+F+Hessian against the backbone's E+F, the autograd Hessian, "
        "finite differences and MACE's compute_hessian; write JSON, a plot and markdown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[5, 10, 20, 30, 60, 100, 200],
        help="atom counts (e.g. 100 200 1000 2000 5000: large sizes run ef, ef_native and "
        "hip_blocks under --timeout and --memory-limit); none: the batch only",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="model dtype"
    )
    parser.add_argument(
        "--backbone",
        choices=tuple(BACKBONES),
        default="mace",
        help="random backbone to wrap (uma: fairchem-core 2.x, eqv2: fairchem-core 1.x)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    for key, flag, what in (
        ("channels", "--channels", "backbone channels (default per backbone: "),
        ("num_interactions", "--num-interactions", "backbone layers (default: "),
        (
            "max_ell",
            "--max-ell",
            "spherical-harmonic l max of the backbone "
            "(MACE edges; ViSNet, UMA, EquiformerV2 node features; default: ",
        ),
    ):
        shown = {k: v for k, v in BACKBONES.items() if key != "max_ell" or k != "schnet"}
        defaults = ", ".join(f"{k} {v[key]}" for k, v in shown.items())
        parser.add_argument(flag, type=int, default=None, help=what + defaults + ")")
    parser.add_argument("--correlation", type=int, default=3, help="MACE body order")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median reported)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed calls before timing (TorchScript warm-up)"
    )
    parser.add_argument(
        "--warmup-budget",
        type=float,
        default=10.0,
        help="stop warming up once warm-up calls took this many seconds",
    )
    parser.add_argument(
        "--repeat-budget",
        type=float,
        default=60.0,
        help="stop repeating once timed calls took this many seconds (at least one call)",
    )
    _add_limits(parser)
    parser.add_argument("--fd-step", type=float, default=1e-3, help="FD displacement, Å")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave)")
    parser.add_argument(
        "--isolation",
        choices=("auto", "process", "none"),
        default="auto",
        help="process: each measurement in a fresh child (CPU default); none: in this process "
        "(CUDA default; CPU peak memory is then approximate)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the model and molecules")
    _add_batch(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON (default docs/benchmarks/speed_{cpu,cuda}.json for MACE, "
        "speed_{cpu,cuda}_<backbone>.json for the others)",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="PNG (default: the JSON's name, .png)"
    )
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.zygote:
        _check_args(parser, args)
    return args


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate ``args`` and fill in the defaults that depend on others."""
    if args.sizes and min(args.sizes) < 3:
        parser.error("--sizes must be at least 3 atoms")
    if not args.sizes and not args.batch_small:
        parser.error("nothing to run: give --sizes, --batch-small or both")
    low, high = args.batch_atoms
    if args.batch_molecules < 1 or low < 3 or high < low:
        parser.error(
            "--batch-molecules must be at least 1 and --batch-atoms MIN MAX 3 <= MIN <= MAX"
        )
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    cuda = args.device.startswith("cuda")
    if args.isolation == "auto":
        args.isolation = "none" if cuda else "process"
    if cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: this torch build sees no CUDA device")
    if cuda and args.isolation == "process":
        parser.error("--isolation process cannot fork after CUDA starts; use none on CUDA")
    if args.isolation == "process" and not hasattr(os, "fork"):
        args.isolation = "none"
    kind = "cuda" if cuda else "cpu"
    if args.backbone != "mace":
        kind += f"_{args.backbone}"
    args.out = args.out or REPO / "docs" / "benchmarks" / f"speed_{kind}.json"
    args.plot = args.plot or REPO / "docs" / "benchmarks" / f"speed_{kind}.png"
    defaults = BACKBONES[args.backbone]
    for key in ("channels", "num_interactions", "max_ell"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the markdown tables. Returns an exit code."""
    args = parse_args(argv)
    if args.zygote:
        return zygote_main()
    settings = Settings(
        sizes=list(args.sizes),
        backbone=args.backbone,
        dtype=args.dtype,
        device=args.device,
        channels=args.channels,
        num_interactions=args.num_interactions,
        max_ell=args.max_ell,
        correlation=args.correlation,
        repeats=args.repeats,
        warmup=args.warmup,
        warmup_budget=args.warmup_budget,
        repeat_budget=args.repeat_budget,
        max_autograd_atoms=args.max_autograd_atoms,
        max_fd_atoms=args.max_fd_atoms,
        max_mace_hessian_atoms=args.max_mace_hessian_atoms,
        max_flat_atoms=args.max_flat_atoms,
        fd_step=args.fd_step,
        threads=args.threads,
        isolation=args.isolation,
        timeout=args.timeout,
        memory_limit_gb=args.memory_limit,
        seed=args.seed,
        batch_small=args.batch_small,
        batch_molecules=args.batch_molecules,
        batch_atoms=list(args.batch_atoms),
    )
    results = run_benchmark(settings, out=args.out)
    if results["rows"]:
        plot(results, args.plot)
        wrote = f"wrote {args.out} and {args.plot}"
    else:
        wrote = f"wrote {args.out} (no single-molecule sizes: no plot)"
    print(wrote, file=sys.stderr, flush=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
