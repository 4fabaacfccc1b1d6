"""The ``hip`` command line.

- ``hip demo``: the shipped trained HIP, briefly fine-tuned further, against its backbone's
  autograd Hessian on held-out reactions and unseen larger molecules, per kind of geometry
  (a few minutes on CPU; :mod:`hip_head.finetune.demo`).
- ``hip demo --wrap-only``: wrap a MACE model (saved and loaded the way MACE foundation models
  are), predict the Hessian of a real molecule with an untrained head, print its frequencies and
  time the head against the autograd Hessian (seconds).
- ``hip finetune``, ``hip data label``, ``hip data sample``, ``hip data reactions``: see
  their ``--help``.
- Chemistry with a HIP (:mod:`hip_head.chem`): ``hip predict``, ``hip vib``, ``hip rate``,
  ``hip ts``, ``hip irc``, ``hip opt``; each takes ``--model`` (default: the shipped trained
  HIP) and has its own ``--help``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def _time(fn, repeats: int = 3) -> tuple[float, object]:
    """Best wall time (s) of ``fn()`` over ``repeats`` calls after one warm-up, and its result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def demo(molecule_name: str = "CH3CH2OH", seed: int = 0) -> int:
    """Run the demo on a G2 molecule from ``ase.build.molecule``. Returns an exit code."""
    from ase.build import molecule

    import hip_head
    from hip_head.adapters.mace import make_random_mace
    from hip_head.serialization import load_backbone, save_backbone
    from hip_head.vibrations import vibrational_analysis

    torch.manual_seed(seed)
    atoms = molecule(molecule_name)
    print(f"hip-head {hip_head.__version__} demo: {molecule_name} ({len(atoms)} atoms), CPU")
    backbone = make_random_mace(channels=64, num_interactions=2, dtype=torch.float64, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mace.model"
        save_backbone(backbone, path)  # a state dict and a description: opens safely
        backbone = load_backbone(path)
    print("backbone: random ScaleShiftMACE (64 channels, 2 layers; untrained: no weights can be")
    print("          downloaded here, so numbers below show the machinery, not chemistry)")

    hip = hip_head.wrap(backbone)
    reference = hip_head.wrap(backbone, hessian="autograd")
    reference.readout = hip.readout
    t_hip, pred = _time(lambda: hip.predict(atoms))
    t_ref, exact = _time(lambda: reference.predict(atoms), repeats=1)

    h_pred, h_exact = pred["hessian"], exact["hessian"]
    print(f"energy {pred['energy']:.4f} eV   max |force| {np.abs(pred['forces']).max():.4f} eV/Å")
    print(f"Hessian shape {h_pred.shape}, symmetric: {np.array_equal(h_pred, h_pred.T)}")
    print(f"time  HIP (E+F+H, one pass): {t_hip * 1e3:8.1f} ms")
    print(f"time  autograd Hessian     : {t_ref * 1e3:8.1f} ms   ({t_ref / t_hip:.1f}x slower)")
    for label, hessian in (("autograd (exact) ", h_exact), ("HIP head (untrained)", h_pred)):
        vib = vibrational_analysis(hessian, atoms)
        freqs = ", ".join(f"{f:.0f}" for f in vib.frequencies_cm1)
        print(f"frequencies, {label} [cm^-1]: {freqs}")
        print(f"   imaginary modes: {vib.n_imaginary}   ZPE: {vib.zero_point_energy:.4f} eV")
    return 0


#: Commands with their own argument parser: name -> (module, function, one-line help).
DELEGATED_COMMANDS: dict[str, tuple[str, str, str]] = {
    "finetune": (
        "hip_head.finetune.train",
        "main_finetune",
        "fine-tune a pretrained MLIP into a HIP: `hip finetune CONFIG`",
    ),
    "convert": (
        "hip_head.serialization",
        "main_convert",
        "rewrite a trusted pickled HIP or backbone file in the safe format",
    ),
    "predict": (
        "hip_head.chem.analysis_commands",
        "main_predict",
        "energy, max force, frequencies, ZPE and saddle index of a structure",
    ),
    "vib": (
        "hip_head.chem.analysis_commands",
        "main_vib",
        "frequency table, stick spectrum and normal-mode trajectories",
    ),
    "rate": (
        "hip_head.chem.analysis_commands",
        "main_rate",
        "free-energy barrier and Eyring rate from a reactant minimum and a TS",
    ),
    "ts": (
        "hip_head.chem.search_commands",
        "main_ts",
        "find and verify a transition state (Sella + IRC)",
    ),
    "irc": (
        "hip_head.chem.search_commands",
        "main_irc",
        "intrinsic reaction coordinate from a TS",
    ),
    "opt": (
        "hip_head.chem.search_commands",
        "main_opt",
        "optimise a structure with the model Hessian",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hip`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in DELEGATED_COMMANDS:  # their own parsers
        import importlib

        module, function, _ = DELEGATED_COMMANDS[argv[0]]
        return int(getattr(importlib.import_module(module), function)(argv[1:]))
    parser = argparse.ArgumentParser(prog="hip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in DELEGATED_COMMANDS.items():
        delegated = sub.add_parser(name, help=f"{help_text} (see `hip {name} --help`)")
        delegated.add_argument("rest", nargs=argparse.REMAINDER)
    p_demo = sub.add_parser(
        "demo", help="the shipped HIP vs its backbone's autograd Hessian on held-out reactions"
    )
    p_demo.add_argument("--steps", type=int, default=300, help="brief fine-tuning steps")
    p_demo.add_argument("--out", default="runs/demo", help="parent of the run directory")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--per-kind", type=int, default=30, help="test frames per kind")
    p_demo.add_argument("--model", default="pretrained", help="a saved HIP or 'pretrained'")
    p_demo.add_argument(
        "--backbone", default="default", help="backbone when no HIP is found, or 'default'"
    )
    p_demo.add_argument(
        "--wrap-only", action="store_true", help="quick: wrap a random MACE, no training"
    )
    p_demo.add_argument("--molecule", default="CH3CH2OH", help="--wrap-only: G2 molecule")
    p_data = sub.add_parser("data", help="Hessian data: `hip data label FILES --out DB ...`")
    p_data.add_argument(
        "action",
        choices=["label", "sample", "reactions"],
        help="label: E, F and Hessian by xTB/PySCF; sample: minima, thermal frames, saddles; "
        "reactions: GFN2-xTB transition states and reaction frames of molecules (SMILES)",
    )
    p_data.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the action")
    args = parser.parse_args(argv)
    if args.command == "demo" and args.wrap_only:
        return demo(args.molecule, args.seed)
    if args.command == "demo":
        from hip_head.finetune.demo import run_demo

        return run_demo(
            args.out,
            max_steps=args.steps,
            seed=args.seed,
            per_kind=args.per_kind,
            model=args.model,
            backbone=args.backbone,
        )
    if args.command == "data" and args.action == "label":
        from hip_head.finetune.labels import main_label

        return main_label(args.rest)
    if args.command == "data" and args.action == "reactions":
        from hip_head.finetune.reaction_data import main_reactions

        return main_reactions(args.rest)
    if args.command == "data" and args.action == "sample":
        from hip_head.finetune.sampling import main_sample

        return main_sample(args.rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
