"""Plumbing shared by the chemistry functions and their commands: models, structures, calculators.

Every ``hip`` chemistry command takes ``--model`` (default: the shipped trained HIP) through
:func:`add_model_argument` / :func:`model_from_argument`, and reads its structures through
:func:`read_structure`, so errors read the same everywhere.
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
    "DEFAULT_MODEL",
    "ChemistryError",
    "add_model_argument",
    "attach",
    "command_error",
    "load_model",
    "model_from_argument",
    "parse_command_args",
    "read_structure",
    "run_command",
]

#: The ``--model`` default of every chemistry command.
DEFAULT_MODEL = "pretrained"


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """Add the common ``--model`` option (a saved HIP file or ``pretrained``)."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a HIP saved with HIPModel.save, or 'pretrained' (the shipped trained HIP; default)",
    )


def load_model(name_or_path: str | Path, hessian: str = "head") -> Any:
    """Load a HIP for chemistry, with an error that says how to get one.

    Args:
        name_or_path: a file saved with :meth:`hip_head.HIPModel.save` or ``"pretrained"``.
        hessian: ``"head"`` (the HIP Hessian) or ``"autograd"`` (the backbone's own exact
            Hessian, same energy and forces).

    Returns:
        A :class:`~hip_head.model.HIPModel` in eval mode.

    Raises:
        ChemistryError: the file does not exist, or the shipped model is not installed.
    """
    import hip_head

    try:
        model = hip_head.load(str(name_or_path))
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


def attach(atoms: Atoms, model: Any) -> Atoms:
    """A copy of ``atoms`` with a :class:`~hip_head.calculator.HIPCalculator` of ``model``."""
    from hip_head.calculator import HIPCalculator

    atoms = atoms.copy()
    atoms.calc = HIPCalculator(model, compute_hessian=False)
    return atoms


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command's ``body``, turning expected failures into one stderr line and rc 2.

    Handled: :class:`~hip_head.errors.HIPError` (including ChemistryError and unknown
    elements), missing or unreadable files (``OSError``) and a missing backbone library
    (``ImportError``).
    """
    try:
        return body()
    except HIPError as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{type(exc).__name__}: {exc}"
    except ImportError as exc:
        message = f"a library the model needs is missing ({exc}); install hip-head[mace]"
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
