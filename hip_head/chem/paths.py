"""Reaction-path interpolation between two structures of the same atoms.

:func:`interpolate` returns ``n_images`` geometries from the reactant to the product (both ends
included), by geodesic interpolation in redundant internal coordinates (Zhu et al., J. Chem.
Phys. 150, 164103 (2019); the ``geodesic_interpolate`` package) or by ASE's image-dependent pair
potential (IDPP). The product is first rotated and translated onto the reactant (Kabsch), so the
path carries no rigid-body motion. Atom ``i`` of the reactant must be atom ``i`` of the product.

Positions in Å.
"""

from __future__ import annotations

import logging

import numpy as np
from ase import Atoms

from hip_head.chem._common import ChemistryError, copy_charge_spin

__all__ = ["INTERPOLATION_METHODS", "align", "check_same_atoms", "interpolate", "rmsd"]

#: Methods of :func:`interpolate`.
INTERPOLATION_METHODS = ("geodesic", "idpp")


def check_same_atoms(reactant: Atoms, product: Atoms, what: str = "reactant and product") -> None:
    """Raise unless the two structures hold the same elements in the same order.

    Raises:
        ChemistryError: different atom counts, or different elements at some index (the
            message names the first few).
    """
    if len(reactant) != len(product):
        raise ChemistryError(
            f"the {what} have different atom counts ({len(reactant)} and {len(product)}): "
            "both ends must hold the same atoms in the same order"
        )
    a, b = reactant.get_chemical_symbols(), product.get_chemical_symbols()
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if differ:
        shown = ", ".join(f"atom {i}: {a[i]} vs {b[i]}" for i in differ[:4])
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        hint = (
            " (same formula: reorder the atoms of one file so that atom i is the same atom in both)"
            if sorted(a) == sorted(b)
            else ""
        )
        raise ChemistryError(f"the {what} differ in their elements ({shown}{more}){hint}")


def align(reference: Atoms, atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` rotated and translated onto ``reference`` (least squares, all atoms
    equally weighted; ASE's ``minimize_rotation_and_translation``)."""
    from ase.build import minimize_rotation_and_translation

    check_same_atoms(reference, atoms, "two structures")
    moved = atoms.copy()
    moved.calc = None
    minimize_rotation_and_translation(reference, moved)
    return moved


def rmsd(a: Atoms, b: Atoms, aligned: bool = True) -> float:
    """Root-mean-square deviation of positions, Å, after aligning ``b`` onto ``a`` (when
    ``aligned``); same atoms in the same order required."""
    check_same_atoms(a, b, "two structures")
    b = align(a, b) if aligned else b
    return float(np.sqrt(np.mean(np.sum((a.get_positions() - b.get_positions()) ** 2, axis=1))))


def _geodesic(reactant: Atoms, product: Atoms, n_images: int, tol: float) -> list[np.ndarray]:
    from geodesic_interpolate import Geodesic, redistribute

    symbols = reactant.get_chemical_symbols()
    ends = np.stack([reactant.get_positions(), product.get_positions()])
    quiet = logging.getLogger("geodesic_interpolate")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        raw = redistribute(symbols, ends, n_images, tol=5 * tol)
        smoother = Geodesic(symbols, raw, scaler=1.7, threshold=3.0, friction=1e-2)
        if len(reactant) > 35:
            smoother.sweep(tol=tol, max_iter=15, micro_iter=20)
        else:
            smoother.smooth(tol=tol, max_iter=15)
    finally:
        quiet.setLevel(level)
    frames = [np.asarray(x, dtype=np.float64).reshape(-1, 3) for x in smoother.path]
    # the package centres and rotates the path: put its first frame back on the reactant
    rotation, shift = _kabsch(frames[0], reactant.get_positions())
    return [f @ rotation.T + shift for f in frames]


def _kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3, 3) and shift t (3,) minimising |source @ R.T + t - target|."""
    cs, ct = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - cs).T @ (target - ct))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, ct - cs @ rotation.T


def _idpp(reactant: Atoms, product: Atoms, n_images: int) -> list[np.ndarray]:
    from ase.mep import NEB

    images = [reactant.copy() for _ in range(n_images - 1)] + [product.copy()]
    neb = NEB(images, method="improvedtangent")
    neb.interpolate(method="idpp")
    return [im.get_positions() for im in images]


def interpolate(
    reactant: Atoms,
    product: Atoms,
    n_images: int = 9,
    method: str = "geodesic",
    *,
    tol: float = 2e-3,
) -> list[Atoms]:
    """A path of geometries from ``reactant`` to ``product``.

    Args:
        reactant: first end (N atoms, Å).
        product: last end: the same elements in the same order (atom ``i`` is the same atom in
            both); it is aligned onto the reactant first.
        n_images: number of geometries returned, both ends included (>= 3).
        method: ``"geodesic"`` (redundant-internal-coordinate geodesic; keeps bonds sensible
            through rotations and transfers) or ``"idpp"`` (ASE's image-dependent pair
            potential).
        tol: geodesic convergence tolerance (its ``redistribute`` uses 5x this).

    Returns:
        ``n_images`` calculator-free structures, the first at the reactant's positions and the
        last at the aligned product's; ``info["image"]`` is the index along the path.

    Raises:
        ChemistryError: different atom counts or elements, fewer than 3 images, an unknown
            method, or the interpolation failing (the message says why).
    """
    method = method.lower()
    if method not in INTERPOLATION_METHODS:
        raise ChemistryError(
            f"unknown interpolation method {method!r}: use one of {INTERPOLATION_METHODS}"
        )
    if n_images < 3:
        raise ChemistryError(f"n_images must be at least 3 (both ends included), got {n_images}")
    check_same_atoms(reactant, product)
    if len(reactant) < 2:
        raise ChemistryError("a path needs at least two atoms")
    start = reactant.copy()
    start.calc = None
    end = align(start, product)
    try:
        if method == "geodesic":
            frames = _geodesic(start, end, n_images, tol)
        else:
            frames = _idpp(start, end, n_images)
    except Exception as exc:  # noqa: BLE001 - numerical failures of either method
        raise ChemistryError(
            f"{method} interpolation failed ({type(exc).__name__}: {exc}); try "
            f"method={'idpp' if method == 'geodesic' else 'geodesic'!r} or pass a TS guess"
        ) from exc
    if len(frames) != n_images or not all(np.all(np.isfinite(f)) for f in frames):
        raise ChemistryError(f"{method} interpolation returned an unusable path")
    out = []
    for k, positions in enumerate(frames):
        image = copy_charge_spin(
            reactant, Atoms(numbers=start.get_atomic_numbers(), positions=positions)
        )
        image.info["image"] = k
        out.append(image)
    return out
