"""The ``hip`` commands that search for structures: ``hip opt``, ``hip ts``, ``hip irc``.

Each reads its start structures (any format ASE reads; the last frame), runs the search with
``--model`` (default: the shipped trained HIP), prints progress and a verdict, and writes its
results to files (:mod:`hip_head.chem.outputs`). Every command has the same three parts:
``_<name>_parser()`` builds its parser, ``_<name>(args)`` does the work, and
``main_<name>(argv)`` joins them with :func:`~hip_head.chem._common.run_parsed_command`, which
turns usage errors and expected failures (a missing file, an unknown element, a minimum given as
a TS, a folder that cannot be written) into one stderr line and exit code 2. Exit code 1 means
the search ran but its result is not what was asked for (not converged, not a minimum, not a
verified TS); the files are written all the same. The commands that analyse given structures
are in :mod:`hip_head.chem.analysis_commands`.

Units: Å, eV, eV/Å, cm⁻¹ (imaginary frequencies as negative numbers), s.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ase.io import write

from hip_head.chem._common import (
    ChemistryError,
    add_model_argument,
    model_from_argument,
    progress_printer,
    read_structure,
    run_parsed_command,
)
from hip_head.chem.irc import IRC_METHODS, irc
from hip_head.chem.optimize import OPT_METHODS, optimize
from hip_head.chem.outputs import write_irc_files, write_json, write_ts_files
from hip_head.chem.paths import INTERPOLATION_METHODS
from hip_head.chem.ts import find_ts

__all__ = ["main_irc", "main_opt", "main_ts"]


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``out`` into a ChemistryError (exit code 2)."""
    try:
        yield
    except OSError as exc:
        raise ChemistryError(f"cannot write the results to {out}: {exc}") from exc


# ---------------------------------------------------------------------------------- hip opt
def _opt_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hip opt", description="Relax a structure to a minimum of a HIP."
    )
    parser.add_argument("structure", help="the start geometry (xyz, extxyz, traj, ...)")
    parser.add_argument("--method", default="newton", choices=OPT_METHODS)
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å (default 0.01)")
    parser.add_argument("--steps", type=int, default=500, help="step limit (default 500)")
    parser.add_argument(
        "--hessian-every", type=int, default=1, help="newton: steps between Hessians (default 1)"
    )
    parser.add_argument("--out", help="relaxed geometry file (default <stem>_opt.xyz)")
    parser.add_argument("--json", help="write the summary to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_model_argument(parser)
    return parser


def main_opt(argv: Sequence[str] | None = None) -> int:
    """``hip opt mol.xyz [--method newton] [--fmax F] [--steps N] [--model M] [--out FILE]``.

    Relaxes the structure (:func:`~hip_head.chem.optimize.optimize`), prints one line every
    five steps and a summary, and writes the relaxed geometry (extxyz; default
    ``<stem>_opt.xyz``) and, with ``--json``, the summary.

    Returns:
        0 when converged to a minimum, 1 when not converged or the end is not a minimum,
        2 for bad input (one line on stderr).
    """
    return run_parsed_command(_opt_parser(), argv, _opt)


def _opt(args: argparse.Namespace) -> int:
    """The body of :func:`main_opt` (``args``: its parsed arguments)."""
    result = optimize(
        read_structure(args.structure),
        model_from_argument(args),
        method=args.method,
        fmax=args.fmax,
        max_steps=args.steps,
        hessian_every=args.hessian_every,
        callback=progress_printer(args.quiet),
    )
    stem = Path(args.structure)
    out = Path(args.out) if args.out else stem.with_name(stem.stem + "_opt.xyz")
    with _writing(out):
        write(out, result.atoms, format="extxyz")
        if args.json:
            write_json(args.json, result.summary())
    status = "converged" if result.converged else f"NOT converged ({result.reason})"
    freqs = result.frequencies_cm1
    lowest = f", lowest frequency {freqs[0]:.1f} cm⁻¹" if freqs is not None and len(freqs) else ""
    print(
        f"{status} after {result.steps} steps: E = {result.energy_eV:.6f} eV, "
        f"fmax = {result.fmax:.4f} eV/Å, saddle index {result.saddle_index}{lowest}; "
        f"{result.wall_s:.1f} s ({result.model_seconds:.1f} s in the model) -> {out}"
    )
    return 0 if result.converged and result.saddle_index in (0, None) else 1


# ---------------------------------------------------------------------------------- hip ts
def _hessian_every(text: str) -> int | None:
    """``--hessian-every``: a positive step count, or ``adaptive`` (None)."""
    if text.strip().lower() == "adaptive":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a step count >= 1 or 'adaptive', got {text!r}")
    return value


def _ts_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hip ts",
        description="Find a transition state between two structures (or from a guess) with a "
        "HIP and check it: one imaginary mode, and an IRC that reaches both ends.",
    )
    parser.add_argument("ends", nargs="*", help="reactant.xyz product.xyz (same atom order)")
    parser.add_argument("--guess", help="a TS guess to start from instead of the path")
    parser.add_argument("--out", default="ts_out", help="output folder (default ts_out)")
    parser.add_argument(
        "--hessian-every",
        type=_hessian_every,
        default=None,
        help="'adaptive' (default): the model Hessian at the start and whenever Sella's updated "
        "Hessian loses the saddle's negative curvature; or K: every K Sella steps",
    )
    parser.add_argument(
        "--hessian",
        default="model",
        choices=("model", "none"),
        help="model: the HIP Hessian in Sella; none: Sella's own estimates",
    )
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å (default 0.01)")
    parser.add_argument("--steps", type=int, default=300, help="Sella step limit (default 300)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--images", type=int, default=9, help="path images (default 9)")
    parser.add_argument("--interpolation", default="geodesic", choices=INTERPOLATION_METHODS)
    parser.add_argument("--no-irc", action="store_true", help="skip the IRC check")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_model_argument(parser)
    return parser


def main_ts(argv: Sequence[str] | None = None) -> int:
    """``hip ts [reactant.xyz product.xyz] [--guess ts.xyz] [--model M] [--hessian-every K]
    [--out DIR]``.

    Finds and checks a transition state (:func:`~hip_head.chem.ts.find_ts`), printing progress
    every five Sella steps, and writes into ``--out`` (default ``ts_out``): ``ts.xyz``,
    ``path.xyz`` (the interpolated path), ``irc_ends.xyz``, ``irc_path.xyz``,
    ``irc_profile.png`` and ``result.json`` (:func:`~hip_head.chem.outputs.write_ts_files`).

    Returns:
        0 when the verdict is ``"ts"``, 1 for any other verdict (the files are still written),
        2 for bad input (one line on stderr).
    """
    return run_parsed_command(_ts_parser(), argv, _ts)


def _ts(args: argparse.Namespace) -> int:
    """The body of :func:`main_ts` (``args``: its parsed arguments)."""
    if len(args.ends) not in (0, 2):
        raise ChemistryError(f"give two end structures (reactant product), got {len(args.ends)}")
    if not args.ends and not args.guess:
        raise ChemistryError("give reactant.xyz product.xyz, or --guess ts.xyz")
    reactant = product = guess = None
    if args.ends:
        reactant, product = (read_structure(p) for p in args.ends)
    if args.guess:
        guess = read_structure(args.guess)
    model = model_from_argument(args)
    if not args.quiet:
        print("searching for a transition state ...", flush=True)
    result = find_ts(
        reactant,
        product,
        guess=guess,
        model=model,
        hessian=args.hessian,
        hessian_every=args.hessian_every,
        fmax=args.fmax,
        max_steps=args.steps,
        time_limit_s=args.time_limit,
        irc=not args.no_irc,
        n_images=args.images,
        interpolation=args.interpolation,
        callback=progress_printer(args.quiet),
    )
    out = Path(args.out)
    with _writing(out):
        files = write_ts_files(result, out)
    print(f"verdict: {result.verdict}: {result.reason}")
    imag = "" if result.imaginary_cm1 is None else f", {abs(result.imaginary_cm1):.1f}i cm⁻¹"
    print(
        f"E = {result.energy_eV:.6f} eV{imag}, {result.steps} steps, fmax "
        f"{result.fmax_eV_per_A:.4f} eV/Å, {result.wall_s:.1f} s "
        f"({result.model_seconds:.1f} s in the model); files: "
        f"{', '.join(sorted(Path(f).name for f in files.values()))} in {out}/"
    )
    return 0 if result.ok else 1


# ---------------------------------------------------------------------------------- hip irc
def _irc_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hip irc", description="Follow a transition state down both sides to two minima."
    )
    parser.add_argument("ts", help="the transition state (xyz, extxyz, traj, ...)")
    parser.add_argument("--out", help="output folder (default irc_<stem>)")
    parser.add_argument("--method", default="auto", choices=IRC_METHODS)
    parser.add_argument("--step", type=float, default=0.15, help="fallback step along the mode, Å")
    parser.add_argument("--fmax", type=float, default=0.01, help="end relaxation threshold, eV/Å")
    parser.add_argument("--steps", type=int, default=200, help="IRC steps per direction")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds (default 600)")
    add_model_argument(parser)
    return parser


def main_irc(argv: Sequence[str] | None = None) -> int:
    """``hip irc ts.xyz [--model M] [--out DIR] [--method auto|sella|displace] [--step A]``.

    Follows the TS's imaginary mode both ways (:func:`~hip_head.chem.irc.irc`), relaxes both
    ends, and writes into ``--out`` (default ``irc_<stem>``): ``irc_ends.xyz``,
    ``irc_path.xyz``, ``irc_profile.png`` (:func:`~hip_head.chem.outputs.write_irc_files`) and
    ``irc.json``.

    Returns:
        0 when both ends relaxed to minima, 1 otherwise, 2 for bad input (one line on stderr;
        e.g. a minimum given as the TS, with its frequencies).
    """
    return run_parsed_command(_irc_parser(), argv, _irc)


def _irc(args: argparse.Namespace) -> int:
    """The body of :func:`main_irc` (``args``: its parsed arguments)."""
    ts = read_structure(args.ts)
    model = model_from_argument(args)
    print(f"IRC from {args.ts} ({len(ts)} atoms) ...", flush=True)
    result = irc(
        ts,
        model,
        step_A=args.step,
        fmax=args.fmax,
        max_steps=args.steps,
        method=args.method,
        time_limit_s=args.time_limit,
    )
    out = Path(args.out) if args.out else Path(f"irc_{Path(args.ts).stem}")
    with _writing(out):
        files = write_irc_files(result, out)
        write_json(out / "irc.json", {**result.summary(), "files": files})
    branches = (result.reverse, result.forward)
    for branch in branches:
        state = "minimum"
        if not (branch.saddle_index == 0 and branch.converged):
            index, f = branch.saddle_index, branch.fmax
            state = f"not a relaxed minimum (saddle index {index}, fmax {f:.3f} eV/Å)"
        print(
            f"{branch.direction:8s} via {branch.how:16s}: E = {branch.energy_eV:.6f} eV, "
            f"barrier {result.ts_energy_eV - branch.energy_eV:.3f} eV, {state}"
        )
    print(f"imaginary frequency {abs(result.imaginary_cm1):.1f}i cm⁻¹; files in {out}/")
    return 0 if all(b.converged and b.saddle_index == 0 for b in branches) else 1
