"""The ``hip`` commands that analyse given structures: ``hip predict``, ``hip vib``, ``hip rate``.

Each reads its structures (any format ASE reads; the last frame), evaluates them with
``--model`` (default: the shipped trained HIP) and prints a report; none moves an atom. Every
command has the same three parts: ``_<name>_parser()`` builds its parser, ``_<name>(args)`` does
the work, and ``main_<name>(argv)`` joins them with
:func:`~hip_head.chem._common.run_parsed_command`, which turns usage errors and expected
failures into one stderr line and exit code 2. The commands that search for structures are in
:mod:`hip_head.chem.search_commands`.

Units: Å, eV, eV/Å, cm⁻¹ (imaginary frequencies as negative numbers), K, Pa, s⁻¹.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hip_head.chem._common import (
    ChemistryError,
    add_model_argument,
    model_from_argument,
    read_structure,
    run_parsed_command,
    stationary_warning,
)
from hip_head.chem.ideal_gas import STANDARD_PRESSURE_PA
from hip_head.chem.properties import (
    frequency_table,
    plot_spectrum,
    predict_properties,
    write_mode_trajectories,
)
from hip_head.chem.thermo import RateResult, rate
from hip_head.vibrations import vibrational_analysis

__all__ = ["main_predict", "main_rate", "main_vib"]


# ----------------------------------------------------------------------------- hip predict
def _saddle_label(index: int) -> str:
    return {0: "minimum", 1: "transition state"}.get(index, f"order-{index} saddle point")


def _print_properties(path: str, model: str, props: dict[str, Any]) -> None:
    print(f"{path}: {props['formula']}, {props['n_atoms']} atoms, model {model}")
    print(f"{'energy':<14} {props['energy_eV']:14.6f} eV")
    print(f"{'max |force|':<14} {props['max_force_eV_per_A']:14.6f} eV/Å")
    print(f"{'ZPE':<14} {props['zpe_eV']:14.6f} eV")
    index = props["saddle_index"]
    print(f"{'saddle index':<14} {index:14d}   ({_saddle_label(index)})")
    print(f"{'wall time':<14} {props['wall_time_s']:14.3f} s (energy, forces, Hessian; one call)")
    freqs = " ".join(f"{f:.1f}" for f in props["frequencies_cm1"])
    print(f"frequencies (cm^-1, imaginary negative): {freqs or 'none (one atom)'}")


def _predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hip predict",
        description="Energy, forces, harmonic frequencies, ZPE and saddle index of a structure.",
    )
    parser.add_argument("structure", help="the structure (any ASE format; last frame)")
    add_model_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main_predict(argv: Sequence[str] | None = None) -> int:
    """The ``hip predict STRUCTURE [--model M] [--json]`` command.

    Returns:
        0 on success, 2 on an error (one line on stderr).
    """
    return run_parsed_command(_predict_parser(), argv, _predict)


def _predict(args: argparse.Namespace) -> int:
    """The body of :func:`main_predict` (``args``: its parsed arguments)."""
    atoms = read_structure(args.structure)
    props = predict_properties(atoms, model_from_argument(args))
    if args.json:
        print(json.dumps({"file": args.structure, "model": args.model, **props}, indent=1))
    else:
        stationary_warning("hip predict", "structure", props["max_force_eV_per_A"])
        _print_properties(args.structure, args.model, props)
    return 0


# ----------------------------------------------------------------------------- hip vib
def _vib_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hip vib",
        description="Harmonic frequencies of a structure; every normal mode written as an ASE "
        "trajectory (view with `ase gui DIR/mode_00.traj`).",
    )
    parser.add_argument("structure", help="the structure (any ASE format; last frame)")
    add_model_argument(parser)
    parser.add_argument(
        "--out", default=None, help="directory for mode_XX.traj (default: STRUCTURE_modes)"
    )
    parser.add_argument("--plot", action="store_true", help="also write OUT/spectrum.png")
    parser.add_argument("--amplitude", type=float, default=0.3, help="largest displacement, Å")
    parser.add_argument("--frames", type=int, default=20, help="frames per mode trajectory")
    return parser


def main_vib(argv: Sequence[str] | None = None) -> int:
    """The ``hip vib STRUCTURE [--model M] [--out DIR] [--plot]`` command.

    Prints the frequency table and writes ``DIR/mode_XX.traj`` for each mode and, with
    ``--plot``, ``DIR/spectrum.png``.

    Returns:
        0 on success, 2 on an error (one line on stderr).
    """
    return run_parsed_command(_vib_parser(), argv, _vib)


def _vib(args: argparse.Namespace) -> int:
    """The body of :func:`main_vib` (``args``: its parsed arguments)."""
    if not args.amplitude > 0 or args.frames < 2:
        raise ChemistryError("--amplitude must be positive and --frames at least 2")
    atoms = read_structure(args.structure)
    out = model_from_argument(args).predict(atoms)
    stationary_warning("hip vib", "structure", float(np.abs(out["forces"]).max()))
    vib = vibrational_analysis(out["hessian"], atoms)
    out_dir = Path(args.out or f"{Path(args.structure).stem}_modes")
    print(
        f"{args.structure}: {atoms.get_chemical_formula()}, {vib.n_modes} modes, "
        f"saddle index {vib.n_imaginary}, ZPE {vib.zero_point_energy:.4f} eV"
    )
    print(frequency_table(vib))
    paths = write_mode_trajectories(atoms, vib, out_dir, args.amplitude, args.frames)
    print(f"wrote {len(paths)} mode trajectories to {out_dir}/ (ase gui {out_dir}/mode_*.traj)")
    if args.plot:
        png = plot_spectrum(
            vib.frequencies_cm1,
            out_dir / "spectrum.png",
            title=f"{atoms.get_chemical_formula()} ({args.structure})",
        )
        print(f"wrote {png}")
    return 0


# ----------------------------------------------------------------------------- hip rate
def _rate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hip rate",
        description="Free-energy barrier and Eyring rate constant of a reactant minimum and a "
        "transition state (ideal gas, harmonic; both optimised with the same model).",
    )
    parser.add_argument("reactant", help="reactant structure (a minimum; any ASE format)")
    parser.add_argument("ts", help="transition-state structure (one imaginary mode)")
    parser.add_argument(
        "--T",
        "--temperature",
        dest="temperature",
        type=float,
        default=298.15,
        help="temperature, K (default 298.15)",
    )
    parser.add_argument(
        "--p",
        "--pressure",
        dest="pressure",
        type=float,
        default=STANDARD_PRESSURE_PA,
        help="pressure, Pa (default 101325)",
    )
    parser.add_argument(
        "--transmission", type=float, default=1.0, help="transmission coefficient κ (default 1)"
    )
    parser.add_argument(
        "--symmetry-reactant",
        type=int,
        default=None,
        help="rotational symmetry number of the reactant (default 1)",
    )
    parser.add_argument(
        "--symmetry-ts",
        type=int,
        default=None,
        help="rotational symmetry number of the transition state (default 1)",
    )
    add_model_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _print_rate(result: RateResult) -> None:
    b = result.barrier
    print(
        f"T = {result.temperature_K:.2f} K, p = {b.reactant.pressure_Pa:.0f} Pa, "
        f"κ = {result.transmission:g}"
    )
    for label, kcal, ev in (
        ("ΔE‡ (electronic)", b.delta_e_kcal_per_mol, b.delta_e_eV),
        ("ΔH‡", b.delta_h_kcal_per_mol, b.delta_h_eV),
        ("ΔG‡", b.delta_g_kcal_per_mol, b.delta_g_eV),
    ):
        print(f"{label:<17} {kcal:10.2f} kcal/mol {ev:10.4f} eV")
    print(f"{'imaginary freq.':<17} {b.imaginary_cm1:10.1f} cm^-1")
    print(f"{'k(T)':<17} {result.k_per_s:10.3e} s^-1")


def main_rate(argv: Sequence[str] | None = None) -> int:
    """The ``hip rate REACTANT TS [--T K] [--p PA] [--model M] [--json]`` command.

    Prints ΔE‡, ΔH‡, ΔG‡ (kcal/mol and eV), the TS's imaginary frequency and k(T) (s⁻¹), or
    all of it with both thermochemistries as JSON.

    Returns:
        0 on success, 2 on an error (one line on stderr).
    """
    return run_parsed_command(_rate_parser(), argv, _rate)


def _rate(args: argparse.Namespace) -> int:
    """The body of :func:`main_rate` (``args``: its parsed arguments)."""
    reactant, ts = read_structure(args.reactant), read_structure(args.ts)
    result = rate(
        reactant,
        ts,
        model_from_argument(args),
        args.temperature,
        pressure_Pa=args.pressure,
        transmission=args.transmission,
        reactant_symmetry_number=args.symmetry_reactant,
        ts_symmetry_number=args.symmetry_ts,
    )
    stationary_warning("hip rate", "reactant", result.barrier.reactant.max_force_eV_per_A)
    stationary_warning("hip rate", "transition state", result.barrier.ts.max_force_eV_per_A)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        _print_rate(result)
    return 0
