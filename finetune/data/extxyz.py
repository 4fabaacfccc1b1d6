"""Extended XYZ files: Hessian flat in each frame's ``info["hessian"]``, eV/Å²."""

from __future__ import annotations

import os
from collections.abc import Iterable

from hip_head.finetune.data.sample import (
    HessianDataError,
    HessianSample,
    OnError,
    _Checked,
    sample_from_atoms,
)

__all__ = ["read_extxyz", "write_extxyz"]


def read_extxyz(path: str | os.PathLike, on_error: OnError = "raise") -> list[HessianSample]:
    """Read every frame of an extended XYZ file.

    The Hessian of each frame is ``info["hessian"]`` (flat ((3N)^2,), eV/Å²); energy (eV) and
    forces (eV/Å) are the frame's calculator results. Positions and forces in extxyz columns
    carry 8 decimals (ASE's writer); info values are exact float64.

    Args:
        path: the file.
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`hip_head.finetune.data.sample`).

    Returns:
        The good samples.

    Raises:
        HessianDataError: unreadable file, or a bad frame with ``on_error="raise"``.
    """
    import ase.io

    path = os.fspath(path)
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - ase parse errors vary
        raise HessianDataError(path, None, f"not a readable extxyz file: {exc}") from exc
    checker = _Checked()
    checker._init_policy(path, on_error)
    out = []
    for i, atoms in enumerate(frames):
        try:
            sample = sample_from_atoms(atoms, meta={"source": path, "index": i})
        except (TypeError, ValueError) as exc:  # e.g. a non-numeric Hessian field
            checker._fail(i, [f"unreadable labels: {exc}"])
            continue
        if checker._check(sample, i) is not None:
            out.append(sample)
    return out


def write_extxyz(samples: Iterable[HessianSample], path: str | os.PathLike) -> int:
    """Write samples as extended XYZ frames (Hessian flat in ``info["hessian"]``, eV/Å²).

    Args:
        samples: the samples.
        path: output file (overwritten).

    Returns:
        The number of frames written.
    """
    import ase.io

    frames = [sample.to_atoms() for sample in samples]
    ase.io.write(os.fspath(path), frames, format="extxyz")
    return len(frames)
