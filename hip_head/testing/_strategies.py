"""Hypothesis strategies: molecules, rotations, reflections, translations, permutations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers as _symbol_to_number
from hypothesis import strategies as st

from hip_head.errors import InvalidArgumentError

#: Elements of the generated molecules when nothing else is asked for: H, C, N, O.
DEFAULT_ELEMENTS: tuple[int, ...] = (1, 6, 7, 8)


def as_numbers(elements: Sequence[int | str]) -> tuple[int, ...]:
    """Atomic numbers of ``elements`` (numbers or symbols), in order."""
    numbers = tuple(_symbol_to_number[e] if isinstance(e, str) else int(e) for e in elements)
    if not numbers:
        raise InvalidArgumentError("elements must not be empty")
    return numbers


@st.composite
def molecules(
    draw: st.DrawFn,
    elements: Sequence[int | str] = DEFAULT_ELEMENTS,
    min_atoms: int = 1,
    max_atoms: int = 30,
    min_distance: float = 0.9,
    max_bond: float = 1.6,
) -> Atoms:
    """Hypothesis strategy: random, compact, non-overlapping molecules.

    Molecules grow like a random tree: each new atom is placed at a distance in
    ``[min_distance, max_bond]`` from a randomly chosen earlier atom, in a random direction,
    and a placement closer than ``min_distance`` to any atom is redrawn (after 10 tries the atom
    goes just beyond the molecule along +x). Every atom therefore has a neighbour within
    ``max_bond``, so all atoms interact through any backbone cutoff >= ``max_bond``, and the
    molecules are about as compact as real ones (9 atoms, defaults: radius of gyration 1.5 Å
    and 5.6 neighbours within 2.5 Å on average; ethanol: 1.55 Å and 6). Positions are centred
    on the origin. Shrinking goes towards fewer atoms, the first element, shortest bonds and
    simple directions.

    Args:
        elements: atomic numbers or symbols to draw from.
        min_atoms: fewest atoms (>= 1).
        max_atoms: most atoms.
        min_distance: smallest interatomic distance, Å (guaranteed).
        max_bond: largest distance from a new atom to the atom it grows from, Å.

    Returns:
        A strategy of non-periodic ``ase.Atoms`` (positions float64, Å).
    """
    numbers_pool = as_numbers(elements)
    if not 1 <= min_atoms <= max_atoms:
        raise InvalidArgumentError(
            f"need 1 <= min_atoms <= max_atoms, got {min_atoms}, {max_atoms}"
        )
    if not 0 < min_distance < max_bond:
        raise InvalidArgumentError(
            f"need 0 < min_distance < max_bond, got {min_distance}, {max_bond}"
        )
    n = draw(st.integers(min_atoms, max_atoms), label="number of atoms")
    numbers = [draw(st.sampled_from(numbers_pool)) for _ in range(n)]
    lower = min_distance * (1.0 + 1e-6)  # stays above min_distance after centring round-off
    positions = np.zeros((n, 3))
    for i in range(1, n):
        placed = False
        for _ in range(10):
            parent = draw(st.integers(0, i - 1))
            length = draw(st.floats(lower, max_bond))
            cos_theta = draw(st.floats(-1.0, 1.0))
            phi = draw(st.floats(0.0, 2.0 * np.pi, exclude_max=True))
            sin_theta = np.sqrt(max(0.0, 1.0 - cos_theta**2))
            direction = np.array([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta])
            candidate = positions[parent] + length * direction
            if np.linalg.norm(positions[:i] - candidate, axis=1).min() >= lower:
                positions[i] = candidate
                placed = True
                break
        if not placed:
            far = int(np.argmax(positions[:i, 0]))
            positions[i] = positions[far] + np.array([lower, 0.0, 0.0])
    positions -= positions.mean(axis=0)
    return Atoms(numbers=numbers, positions=positions, pbc=False)


def rotations() -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: proper rotations (3x3 float64, det +1), from unit quaternions.

    Shrinks towards simple rotations (identity, half turns about the axes).
    """
    component = st.floats(-1.0, 1.0, allow_nan=False)
    return st.tuples(component, component, component, component).map(_quaternion_to_matrix)


def _quaternion_to_matrix(q: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = q
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    if norm < 1e-3:  # too short to normalise reliably: the identity
        return np.eye(3)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    matrix = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    # Re-orthonormalise to float64 precision (the formula is exact only for |q| = 1 exactly).
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def orthogonal_matrices(improper: bool | None = None) -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: orthogonal 3x3 float64 matrices, proper and improper.

    Args:
        improper: None gives both kinds, True only det -1 (``-R``: reflections and
            rotoinversions), False only rotations.
    """
    kinds = st.booleans() if improper is None else st.just(bool(improper))
    return st.tuples(rotations(), kinds).map(lambda pair: -pair[0] if pair[1] else pair[0])


def translations(scale: float = 10.0) -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: translation vectors (3,) float64 with components in ±``scale`` Å."""
    component = st.floats(-scale, scale, allow_nan=False, allow_infinity=False)
    return st.tuples(component, component, component).map(lambda t: np.array(t, dtype=np.float64))


def permutations(n: int) -> st.SearchStrategy[np.ndarray]:
    """Hypothesis strategy: permutations of ``range(n)`` as (n,) int64 arrays.

    ``n`` is a number, not a strategy: to permute a generated molecule, draw the permutation
    inside the test with ``st.data()`` (``data.draw(permutations(len(atoms)))``). Shrinks to the
    identity.
    """
    return st.permutations(list(range(n))).map(lambda p: np.array(p, dtype=np.int64))
