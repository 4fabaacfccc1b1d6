"""Plumbing shared by the chemistry functions and their commands: models, structures, calculators.

Every ``hip`` chemistry command takes ``--model`` (default: the shipped trained HIP) through
:func:`add_model_argument` / :func:`model_from_argument`, reads its structures through
:func:`read_structure`, parses its arguments with :func:`parse_command_args` and runs its body
through :func:`run_command` (both at once: :func:`run_parsed_command`), so usage, errors and
exit codes read the same everywhere: 0 for success, 1 for a result the command judges not good
(it says why), 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from hip_head.errors import ChemistryError, HIPError, InvalidStructureError

__all__ = [
    "CHARGE_SPIN_KEYS",
    "DEFAULT_MODEL",
    "STATIONARY_FORCE_TOL",
    "ChemistryError",
    "add_model_argument",
    "attach",
    "command_error",
    "copy_charge_spin",
    "load_model",
    "model_from_argument",
    "parse_command_args",
    "progress_printer",
    "read_structure",
    "run_command",
    "run_parsed_command",
    "stationary_warning",
]

#: The ``--model`` default of every chemistry command.
DEFAULT_MODEL = "pretrained"

#: ``atoms.info`` keys that say which electronic state a structure is in: total charge (e) and
#: spin multiplicity 2S + 1. Every copy of a structure the chemistry tools make keeps them.
CHARGE_SPIN_KEYS = ("charge", "spin")

#: Above this max |force| (eV/Å) a structure is not a stationary point: the commands warn that
#: its frequencies and free energies are not meaningful.
STATIONARY_FORCE_TOL: float = 0.05

#: Libraries of the ``chem`` extra (``pip install hip-head[chem]``), by import name.
_CHEM_LIBRARIES = ("sella", "tblite", "rdkit", "geodesic_interpolate", "pyscf", "scipy")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """Add the common ``--model`` option (a saved HIP file or ``pretrained``)."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a HIP saved with HIPModel.save, or 'pretrained' (the shipped trained HIP; default)",
    )


def load_model(name_or_path: str | Path, hessian: str = "head", *, trust: bool = False) -> Any:
    """Load a HIP for chemistry, with an error that says how to get one.

    Args:
        name_or_path: a file saved with :meth:`hip_head.HIPModel.save` or ``"pretrained"``.
        hessian: ``"head"`` (the HIP Hessian) or ``"autograd"`` (the backbone's own exact
            Hessian, same energy and forces).
        trust: also open pickle-format files (see :func:`hip_head.load`); safe files and the
            shipped model never need it.

    Returns:
        A :class:`~hip_head.model.HIPModel` in eval mode.

    Raises:
        ChemistryError: the file does not exist, or the shipped model is not installed.
        UntrustedFileError: a pickle-format file and ``trust`` is False (nothing was run).
    """
    import hip_head

    try:
        model = hip_head.load(str(name_or_path), trust=trust)
    except FileNotFoundError as exc:
        raise ChemistryError(
            f"no HIP model at {name_or_path!r}: pass --model FILE (a model saved with "
            "HIPModel.save or written by `hip finetune`), or 'pretrained' for the shipped one "
            f"(train it with scripts/train_hip.py if it is missing) ({exc})"
        ) from exc
    if hessian != model.hessian_method:
        model = hip_head.HIPModel(model.adapter, model.readout, hessian=hessian).eval()
    return model


def model_from_argument(args: argparse.Namespace, hessian: str = "head") -> Any:
    """The model named by a parsed ``--model`` option (see :func:`load_model`)."""
    return load_model(args.model, hessian=hessian)


def read_structure(path: str | Path, index: int | str = -1) -> Atoms:
    """Read one structure (any format ASE reads: xyz, extxyz, traj, ...).

    Args:
        path: the file.
        index: which frame of a multi-frame file (ASE's index; default the last).

    Returns:
        The ``ase.Atoms`` (a copy without calculator).

    Raises:
        ChemistryError: the file is missing or unreadable, or holds no atoms.
        InvalidStructureError: it holds unknown elements.
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise ChemistryError(f"{path}: no such file")
    try:
        atoms = read(path, index=index)
    except Exception as exc:  # ASE raises many types for malformed files
        raise ChemistryError(
            f"{path}: cannot read a structure ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(atoms, list):
        atoms = atoms[-1]
    if len(atoms) == 0:
        raise ChemistryError(f"{path}: the file holds no atoms")
    if (atoms.numbers <= 0).any():
        raise InvalidStructureError(f"{path}: unknown element (atomic number 0 or 'X')")
    atoms = atoms.copy()
    atoms.calc = None
    return atoms


def copy_charge_spin(source: Atoms, target: Atoms) -> Atoms:
    """Copy ``source.info``'s charge and spin (:data:`CHARGE_SPIN_KEYS`), where set, onto
    ``target``; returns ``target``."""
    for key in CHARGE_SPIN_KEYS:
        if key in source.info:
            target.info[key] = source.info[key]
    return target


def attach(atoms: Atoms, model: Any) -> Atoms:
    """A copy of ``atoms`` with a :class:`~hip_head.calculator.HIPCalculator` of ``model``."""
    from hip_head.calculator import HIPCalculator

    atoms = atoms.copy()
    atoms.calc = HIPCalculator(model, compute_hessian=False)
    return atoms


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command's ``body``, turning expected failures into one stderr line and rc 2.

    Handled: :class:`~hip_head.errors.HIPError` (including ChemistryError and unknown
    elements), bad values (``ValueError``), missing or unreadable files (``OSError``) and a
    missing library (``ImportError``; the message names the extra to install).
    """
    try:
        return body()
    except HIPError as exc:
        message = str(exc)
    except (OSError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}"
    except ImportError as exc:
        library = (exc.name or "").split(".")[0]
        extra = "chem" if library in _CHEM_LIBRARIES else "mace"
        message = f"a library the command needs is missing ({exc}); install hip-head[{extra}]"
    return command_error(prog, message)


def command_error(prog: str, message: str) -> int:
    """Print ``prog: error: message`` (one line) on stderr and return exit code 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def parse_command_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> Any:
    """``parser.parse_args(argv)``, returning the exit code instead of raising SystemExit.

    Returns:
        The namespace, or an ``int`` exit code (0 for ``--help``, 2 for a usage error).
    """
    try:
        return parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def run_parsed_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    body: Callable[[argparse.Namespace], int],
) -> int:
    """A chemistry command's ``main``: parse ``argv`` (:func:`parse_command_args`), then run
    ``body(args)`` through :func:`run_command` under ``parser.prog``.

    Returns:
        ``body``'s exit code; 0 for ``--help``; 2 for a usage error or a handled failure.
    """
    args = parse_command_args(parser, argv)
    if isinstance(args, int):
        return args
    return run_command(parser.prog, lambda: body(args))


def progress_printer(quiet: bool, every: int = 5) -> Callable[[int, float, float], None]:
    """An optimiser callback ``(step, energy_eV, fmax_eV_per_A)`` that prints one line every
    ``every`` steps (nothing when ``quiet``)."""

    def progress(step: int, energy: float, fmax: float) -> None:
        if not quiet and step % every == 0:
            print(f"step {step:4d}  E = {energy:.6f} eV  fmax = {fmax:.4f} eV/Å", flush=True)

    return progress


def stationary_warning(prog: str, role: str, max_force: float | None) -> None:
    """Warn on stderr when ``max_force`` (eV/Å) shows a structure is not stationary
    (above :data:`STATIONARY_FORCE_TOL`)."""
    if max_force is not None and max_force > STATIONARY_FORCE_TOL:
        print(
            f"{prog}: warning: the {role} has max |force| {max_force:.3f} eV/Å "
            f"(> {STATIONARY_FORCE_TOL}): not a stationary point of the model, so its harmonic "
            "frequencies are not meaningful; optimise it first",
            file=sys.stderr,
        )
