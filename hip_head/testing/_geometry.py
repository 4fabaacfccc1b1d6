"""Tolerances, transformations of molecules and of Hessians, and rebuildable descriptions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from hip_head.errors import InvalidArgumentError

#: Relative tolerance per dtype of every equivariance and batching comparison, see
#: :func:`default_tolerance`.
RELATIVE_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}
#: Relative tolerance of "wrapping leaves the backbone's energy and forces unchanged": the
#: adapter's ``native_energy_forces`` may run another code path (its own neighbour search, a
#: differently ordered sum), so it is compared less tightly than the exact symmetries.
NATIVE_TOLERANCE: dict[torch.dtype, float] = {torch.float64: 1e-6, torch.float32: 1e-4}
#: Energies (eV) and forces (eV/Å) smaller than this are compared as if they had this magnitude,
#: so that exact zeros (a lone atom's forces) do not demand bitwise equality.
ENERGY_FORCE_FLOOR = 1.0


def default_tolerance(dtype: torch.dtype, scale: float = 1.0) -> float:
    """Absolute tolerance for comparing a quantity of magnitude ``scale`` computed in ``dtype``.

    The tolerance is relative: ``rtol(dtype) * scale``, with ``scale`` the largest magnitude of
    the reference (e.g. ``max |H|`` in eV/Å²), so it fits any unit and any backbone. The
    relative parts are

    * float64: 1e-10. Round-off in float64 is ~1e-16 per operation; even deep message-passing
      networks amplify it to 1e-14 .. 1e-12 relative, so 1e-10 leaves a margin of 100x while
      the bugs the kit exists to catch (a wrong l = 1 basis, a pseudo-scalar labelled as a
      scalar) give errors of 1e-3 .. 1 relative. float64 is where equivariance is *proved*.
    * float32: 1e-4, about 1000 ulps (float32 eps is 1.2e-7): room for the accumulated
      round-off of a few layers and of rounding moved positions to float32.
    * float16 / bfloat16: 1e-2.

    :func:`check_adapter` compares energies and forces with a scale of at least 1 eV and
    1 eV/Å, and the backbone's own energy and forces (``native_energy_forces``) with 1e-6
    (float64) and 1e-4 (float32) relative.

    Args:
        dtype: the floating dtype the model ran in.
        scale: magnitude of the compared quantity (same units as the tolerance returned).

    Returns:
        The absolute tolerance, in the units of ``scale``.

    Raises:
        InvalidArgumentError: no default for ``dtype`` (not a floating dtype).
    """
    if dtype not in RELATIVE_TOLERANCE:
        raise InvalidArgumentError(f"no default tolerance for {dtype}; pass atol/rtol explicitly")
    return RELATIVE_TOLERANCE[dtype] * float(scale)


def random_rotation(seed: int | None = None) -> np.ndarray:
    """A random proper rotation, uniform on SO(3) (Haar measure).

    Args:
        seed: seed of numpy's generator (None: fresh entropy).

    Returns:
        (3, 3) float64 orthogonal matrix with determinant +1.
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))  # makes the distribution uniform
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_orthogonal(seed: int | None = None, improper: bool = True) -> np.ndarray:
    """A random orthogonal matrix: a rotation, or with ``improper`` a rotation times -1.

    Args:
        seed: seed of numpy's generator.
        improper: True gives determinant -1 (a rotoinversion; every improper orthogonal
            matrix is -R for some rotation R), False a proper rotation.

    Returns:
        (3, 3) float64 orthogonal matrix.
    """
    rotation = random_rotation(seed)
    return -rotation if improper else rotation


def transform_atoms(
    atoms: Atoms,
    transform: np.ndarray | None = None,
    translation: np.ndarray | None = None,
    permutation: Sequence[int] | np.ndarray | None = None,
    *,
    center: np.ndarray | None = None,
) -> Atoms:
    """Move every atom r -> Q (r - c) + c + t, and optionally reorder the atoms.

    Args:
        atoms: the molecule (positions Å).
        transform: (3, 3) matrix Q (None: identity).
        translation: (3,) vector t, Å (None: zero).
        permutation: new atom i is old atom ``permutation[i]`` (None: keep the order).
        center: (3,) point c that Q leaves in place, Å (None: the origin). Pass
            ``atoms.positions.mean(axis=0)`` to rotate about the centroid.

    Returns:
        A new ``ase.Atoms`` (``info``, e.g. a charge, copied); ``atoms`` is not modified.
        Positions are computed in float64; a cell (if any) is transformed by Q.
    """
    out = atoms.copy()
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    if transform is not None:
        q = np.asarray(transform, dtype=np.float64)
        c = np.zeros(3) if center is None else np.asarray(center, dtype=np.float64)
        positions = (positions - c) @ q.T + c
        out.set_cell(np.asarray(atoms.cell.array) @ q.T)
    if translation is not None:
        positions = positions + np.asarray(translation, dtype=np.float64)
    out.set_positions(positions)
    if permutation is not None:
        out = out[np.asarray(permutation, dtype=np.int64)]
    return out


def rotate_hessian(hessian: torch.Tensor, transform: Any) -> torch.Tensor:
    """(I ⊗ Q) H (I ⊗ Q)ᵀ: how a Hessian must change when all atoms move r -> Q r.

    Args:
        hessian: (3N, 3N), index 3a + α, eV/Å².
        transform: (3, 3) orthogonal matrix Q (numpy or torch).

    Returns:
        (3N, 3N) tensor, dtype and device of ``hessian``.
    """
    q = torch.as_tensor(transform, dtype=hessian.dtype, device=hessian.device)
    n = hessian.shape[0] // 3
    blocks = hessian.reshape(n, 3, n, 3)
    return torch.einsum("ji,aibk,lk->ajbl", q, blocks, q).reshape(3 * n, 3 * n)


def permute_hessian(hessian: torch.Tensor, permutation: Sequence[int] | np.ndarray) -> torch.Tensor:
    """P H Pᵀ with whole 3x3 blocks moved: the Hessian of the reordered molecule.

    Args:
        hessian: (3N, 3N), index 3a + α, eV/Å².
        permutation: new atom i is old atom ``permutation[i]``.

    Returns:
        (3N, 3N) tensor with block (i, j) equal to the old block (perm[i], perm[j]).
    """
    n = hessian.shape[0] // 3
    perm = torch.as_tensor(np.asarray(permutation), dtype=torch.long, device=hessian.device)
    blocks = hessian.reshape(n, 3, n, 3)[perm][:, :, perm]
    return blocks.reshape(3 * n, 3 * n)


def describe_atoms(atoms: Atoms) -> str:
    """A molecule as its formula and an ``ase.Atoms(...)`` expression that rebuilds it exactly.

    Args:
        atoms: a non-periodic molecule (positions Å; ``info["charge"]`` / ``["spin"]`` kept).

    Returns:
        e.g. ``"H2O (3 atoms): ase.Atoms(numbers=[8, 1, 1], positions=[[...], ...])"``; the
        positions are printed as Python floats, which round-trip exactly.
    """
    numbers = atoms.get_atomic_numbers().tolist()
    positions = np.asarray(atoms.get_positions(), dtype=np.float64).tolist()
    info = {k: atoms.info[k] for k in ("charge", "spin") if k in atoms.info}
    extra = f", info={info}" if info else ""
    return (
        f"{atoms.get_chemical_formula()} ({len(atoms)} atom{'s' if len(atoms) != 1 else ''}): "
        f"ase.Atoms(numbers={numbers}, positions={positions}{extra})"
    )


def format_matrix(m: Any, indent: int = 6) -> str:
    """A matrix or vector printed with 17 significant digits (enough to rebuild it exactly);
    rows after the first are indented by ``indent`` spaces (to align after ``"  Q = "``)."""
    text = np.array2string(np.asarray(m, dtype=np.float64), precision=17, separator=", ")
    return text.replace("\n", "\n" + " " * indent)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float64`` -> ``"float64"``."""
    return str(dtype).replace("torch.", "")
