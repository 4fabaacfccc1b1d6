"""The Hessian sample record, its validation, and the readers' error policy.

A :class:`HessianSample` holds one structure and its labels in hip-head's units and layout:
positions (N, 3) Å, float64; atomic numbers (N,) int64; energy eV (or None); forces (N, 3) eV/Å
(or None); Hessian flat ``((3N)**2,)`` eV/Å², the row-major (3N, 3N) matrix with index
``3a + α`` (atom-major, xyz inner).

:func:`validate_sample` lists what is wrong with a sample. :class:`_Checked` applies the
readers' ``on_error`` policy: ``"raise"`` raises :class:`HessianDataError` naming the file,
record and problem; ``"skip"`` warns once per bad record, ``dataset[i]`` then returns ``None``
and iteration skips the record.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from hip_head.errors import HIPError, InvalidArgumentError

__all__ = [
    "MAX_ABS_HESSIAN",
    "SOURCE_META_KEYS",
    "HessianDataError",
    "HessianSample",
    "OnError",
    "sample_from_atoms",
    "validate_sample",
]

#: Largest plausible |Hessian entry|, eV/Å². Larger values usually mean wrong units.
MAX_ABS_HESSIAN = 1e4

#: Largest plausible max |H − Hᵀ| / max |H| of a label (finite differences give ~1e-3).
MAX_RELATIVE_ASYMMETRY = 0.1

#: Meta keys the readers add themselves (file and record index); not written back to files.
SOURCE_META_KEYS = ("source", "index")

OnError = Literal["raise", "skip"]


class HessianDataError(HIPError, ValueError):
    """A Hessian data file or record is unreadable or fails validation.

    Attributes:
        source: the file (or other source name).
        index: the record index or key, or None when the whole file is bad.
        problems: what is wrong.
    """

    def __init__(self, source: str, index: int | str | None, problems: str | Sequence[str]) -> None:
        self.source = str(source)
        self.index = index
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        where = self.source if index is None else f"{self.source}: record {index}"
        super().__init__(f"{where}: {'; '.join(self.problems)}")


# ---------------------------------------------------------------------------------- the sample
@dataclass
class HessianSample:
    """One structure with its labels.

    Attributes:
        positions: (N, 3) float64 Cartesian positions, Å.
        numbers: (N,) int64 atomic numbers.
        energy: energy, eV, or None.
        forces: (N, 3) float64 forces, eV/Å, or None.
        hessian: ((3N)**2,) float64 flat Hessian, eV/Å², row-major (3N, 3N) with index
            ``3a + α``, or None.
        charge: total charge, e.
        spin: spin multiplicity.
        meta: free-form metadata, e.g. ``rxn``, ``molecule``; readers add ``source`` (the file)
            and ``index`` (the record index).
    """

    positions: np.ndarray
    numbers: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    hessian: np.ndarray | None = None
    charge: int = 0
    spin: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.numbers = np.asarray(self.numbers).astype(np.int64).reshape(-1)
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
        if self.hessian is not None:
            self.hessian = np.asarray(self.hessian, dtype=np.float64).reshape(-1)
        self.charge = int(self.charge)
        self.spin = int(self.spin)

    @property
    def num_atoms(self) -> int:
        """Number of atoms N."""
        return int(self.numbers.shape[0])

    def hessian_matrix(self) -> np.ndarray | None:
        """The Hessian as a (3N, 3N) matrix, eV/Å² (a view), or None."""
        if self.hessian is None:
            return None
        n3 = 3 * self.num_atoms
        return self.hessian.reshape(n3, n3)

    def to_atoms(self) -> Atoms:
        """An ``ase.Atoms`` with the labels attached.

        Returns:
            Atoms with positions (Å); energy (eV) and forces (eV/Å) in a
            ``SinglePointCalculator``; ``info["charge"]``, ``info["spin"]``,
            ``info["hessian"]`` (flat ((3N)**2,), eV/Å²) and ``info["meta"]`` (without the
            reader-added ``source``/``index``).
        """
        atoms = Atoms(numbers=self.numbers, positions=self.positions)
        atoms.info["charge"] = self.charge
        atoms.info["spin"] = self.spin
        meta = _portable_meta(self.meta)
        if meta:
            atoms.info["meta"] = meta
        if self.hessian is not None:
            atoms.info["hessian"] = self.hessian.copy()
        if self.energy is not None or self.forces is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=self.energy, forces=self.forces)
        return atoms


def _portable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in SOURCE_META_KEYS}


def sample_from_atoms(
    atoms: Atoms, hessian: np.ndarray | None = None, meta: dict[str, Any] | None = None
) -> HessianSample:
    """Build a sample from an ``ase.Atoms``.

    Args:
        atoms: the structure; energy/forces are taken from its calculator results when present,
            charge/spin/meta/hessian from ``atoms.info``.
        hessian: Hessian, eV/Å², flat ((3N)**2,) or (3N, 3N); overrides ``info["hessian"]``.
        meta: extra metadata merged over ``info["meta"]``.

    Returns:
        The sample.
    """
    energy = forces = None
    calc = atoms.calc
    if calc is not None:
        results = getattr(calc, "results", {})
        energy = results.get("energy")
        forces = results.get("forces")
    if hessian is None:
        hessian = atoms.info.get("hessian")
    merged = dict(atoms.info.get("meta") or {})
    merged.update(meta or {})
    return HessianSample(
        positions=atoms.get_positions(),
        numbers=atoms.get_atomic_numbers(),
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        hessian=None if hessian is None else np.asarray(hessian, dtype=np.float64).reshape(-1),
        charge=int(atoms.info.get("charge", 0)),
        spin=int(atoms.info.get("spin", 1)),
        meta=merged,
    )


# ---------------------------------------------------------------------------------- validation
def validate_sample(
    sample: HessianSample, index: int | str | None = None, source: str = ""
) -> list[str]:
    """List what is wrong with a sample (empty when it is fine).

    Checks: positions (N, 3) and finite; forces (N, 3) and finite; energy finite; Hessian of
    length (3N)² and finite, symmetric to :data:`MAX_RELATIVE_ASYMMETRY` of its largest entry,
    max |H| <= :data:`MAX_ABS_HESSIAN` eV/Å².

    Args:
        sample: the sample.
        index: its record index (only used by callers to build messages).
        source: its file (only used by callers to build messages).

    Returns:
        Human-readable problems.
    """
    del index, source  # part of the signature so callers can pass context uniformly
    problems: list[str] = []
    n = sample.num_atoms
    if n == 0:
        problems.append("the structure has no atoms")
    if sample.positions.shape != (n, 3):
        problems.append(f"positions have shape {sample.positions.shape}, expected ({n}, 3)")
    elif not np.isfinite(sample.positions).all():
        problems.append("positions contain NaN/inf")
    if sample.energy is not None and not np.isfinite(sample.energy):
        problems.append(f"energy is {sample.energy}")
    if sample.forces is not None:
        if sample.forces.shape != (n, 3):
            problems.append(f"forces have shape {sample.forces.shape}, expected ({n}, 3)")
        elif not np.isfinite(sample.forces).all():
            problems.append("forces contain NaN/inf")
    if sample.hessian is not None:
        h = sample.hessian
        if h.size != (3 * n) ** 2:
            problems.append(
                f"Hessian has {h.size} entries but {n} atoms need (3N)^2 = {(3 * n) ** 2}"
            )
        finite = bool(np.isfinite(h).all())
        asymmetry = _relative_asymmetry(h, n) if finite and n and h.size == (3 * n) ** 2 else 0.0
        if not finite:
            problems.append("Hessian contains NaN/inf")
        elif asymmetry > MAX_RELATIVE_ASYMMETRY:
            problems.append(
                f"Hessian is not symmetric: max |H - H^T| is {asymmetry:.2g} of max |H| (more "
                f"than {MAX_RELATIVE_ASYMMETRY:g}; finite-difference labels are ~1e-3): wrong "
                "layout or not a Hessian?"
            )
        elif h.size and np.abs(h).max() > MAX_ABS_HESSIAN:
            problems.append(
                f"max |Hessian| = {np.abs(h).max():.3g} > {MAX_ABS_HESSIAN:g} eV/Å^2 "
                "(wrong units? maybe Hartree/Bohr^2 or not eV/Å^2)"
            )
    return problems


def _relative_asymmetry(hessian: np.ndarray, n: int) -> float:
    """max |H − Hᵀ| / max |H| of a ((3N)²,) Hessian (0 for an all-zero one)."""
    h = np.asarray(hessian, dtype=np.float64).reshape(3 * n, 3 * n)
    scale = np.abs(h).max()
    return float(np.abs(h - h.T).max() / scale) if scale > 0 else 0.0


class _Checked:
    """Validation and error policy shared by the readers."""

    source: str
    on_error: OnError

    def _init_policy(self, source: str, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise InvalidArgumentError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.source = str(source)
        self.on_error = on_error
        self._warned: set[int | str] = set()

    def _fail(self, index: int | str, problems: Sequence[str]) -> None:
        if self.on_error == "raise":
            raise HessianDataError(self.source, index, problems)
        if index not in self._warned:
            self._warned.add(index)
            warnings.warn(
                f"skipping {self.source}: record {index}: {'; '.join(problems)}", stacklevel=3
            )

    def __iter__(self) -> Iterator[HessianSample]:
        """Good samples in order (bad ones skipped or raised per ``on_error``)."""
        for i in range(len(self)):
            sample = self[i]
            if sample is not None:
                yield sample

    def _check(self, sample: HessianSample, index: int | str) -> HessianSample | None:
        problems = validate_sample(sample, index, self.source)
        if problems:
            self._fail(index, problems)
            return None
        return sample


def _normalize_index(index: int, length: int) -> int:
    """``index`` as a non-negative record index (negative counts from the end).

    Raises:
        IndexError: the index is out of range for ``length`` records.
    """
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} records")
    return index
