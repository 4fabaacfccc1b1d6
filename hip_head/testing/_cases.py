"""The molecules check_adapter runs on: a chiral probe, lone atoms and generated cases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from ase import Atoms
from hypothesis import strategies as st

from ._geometry import random_orthogonal, random_rotation
from ._strategies import molecules, orthogonal_matrices, permutations, rotations, translations

#: Translation of lone atoms and of the probe, and the one added to a generated translation
#: shorter than 1 Å (so that the translation check is never vacuous), Å.
FIXED_TRANSLATION = np.array([1.5, -2.0, 3.25])


class Case(NamedTuple):
    """One test case: a molecule, the transformations applied to it, its batch-mates."""

    atoms: Atoms
    rotation: np.ndarray
    improper: np.ndarray
    translation: np.ndarray
    permutation: np.ndarray
    mates: tuple[Atoms, ...]
    label: str = ""


def with_charge(atoms: Atoms, charge: int | None) -> Atoms:
    """``atoms`` with ``info["charge"] = charge`` (e) set in place; None leaves it unset."""
    if charge is not None:
        atoms.info["charge"] = int(charge)
    return atoms


@st.composite
def cases(draw: st.DrawFn, elements: Sequence[int], max_atoms: int, charges: Sequence[int]) -> Case:
    """A generated molecule, its transformations and two batch-mates of other sizes."""
    atoms = draw(molecules(elements=elements, max_atoms=max_atoms))
    n = len(atoms)
    mates = []
    for _ in range(2):
        k = draw(st.integers(1, max_atoms), label="batch-mate size")
        if k == n and max_atoms > 1:
            k = n + 1 if n < max_atoms else n - 1
        mates.append(draw(molecules(elements=elements, min_atoms=k, max_atoms=k)))
    for molecule in (atoms, *mates):
        with_charge(molecule, draw(st.sampled_from(charges)) if charges else None)
    translation = draw(translations())
    if np.linalg.norm(translation) < 1.0:
        translation = translation + FIXED_TRANSLATION
    return Case(
        atoms=atoms,
        rotation=draw(rotations()),
        improper=draw(orthogonal_matrices(improper=True)),
        translation=translation,
        permutation=draw(permutations(n)),
        mates=tuple(mates),
    )


def probe_molecule(elements: Sequence[int]) -> Atoms:
    """A fixed chiral 5-atom molecule (distorted tetrahedron, bonds 1.0-1.3 Å)."""
    directions = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions[0] += [0.15, -0.05, 0.0]
    bonds = np.array([1.0, 1.1, 1.2, 1.3])
    positions = np.vstack([np.zeros(3), bonds[:, None] * directions])
    numbers = [elements[i % len(elements)] for i in range(5)]
    return Atoms(numbers=numbers, positions=positions - positions.mean(axis=0), pbc=False)


def probe_case(elements: Sequence[int], charges: Sequence[int], seed: int) -> Case:
    """The probe, and two fixed batch-mates of other sizes and (given charges) other charges."""
    e = list(elements)
    bent = Atoms(
        numbers=[e[1 % len(e)], e[0], e[0]],
        positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
    )
    bent.positions -= bent.positions.mean(axis=0)
    pair = Atoms(numbers=[e[2 % len(e)], e[3 % len(e)]], positions=[[0, 0, -0.55], [0, 0, 0.55]])
    atoms = probe_molecule(elements)
    if charges:
        with_charge(atoms, charges[0])
        with_charge(bent, charges[-1])
        with_charge(pair, charges[len(charges) // 2])
    return Case(
        atoms=atoms,
        rotation=random_rotation(seed),
        improper=random_orthogonal(seed + 1, improper=True),
        translation=FIXED_TRANSLATION,
        permutation=np.random.default_rng(seed).permutation(len(atoms)),
        mates=(bent, pair),
        label="probe molecule",
    )


def lone_atom_case(z: int, charges: Sequence[int], seed: int) -> Case:
    atoms = Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]], pbc=False)
    with_charge(atoms, charges[0] if charges else None)
    return Case(
        atoms=atoms,
        rotation=random_rotation(seed),
        improper=random_orthogonal(seed, improper=True),
        translation=FIXED_TRANSLATION,
        permutation=np.zeros(1, dtype=np.int64),
        mates=(),
        label="lone atom",
    )
