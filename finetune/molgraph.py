"""Molecular bond graphs: which atoms are bonded, canonical identities, SMILES.

Atoms i, j are bonded when their distance is below ``bond_scale`` (1.25) times the sum of
their covalent radii (ASE's ``covalent_radii``), or below :data:`MIN_BOND_CUTOFF`. Molecule
identities are canonical connectivity strings (:func:`graph_key`): RDKit SMILES of the graph
with explicit hydrogens and every bond single, so an xTB geometry and a SMILES compare
without bond-order perception. Used to tell a reaction (the two ends' graphs differ) from a
conformer change, and to keep test molecules out of the training data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from hip_head.errors import InvalidArgumentError

__all__ = [
    "MIN_BOND_CUTOFF",
    "bond_graph",
    "fragment_sizes",
    "graph_key",
    "graph_key_of_smiles",
    "reaction_type",
    "smiles_of",
]

#: Atoms closer than this (Å) are always bonded: GFN2-xTB's H₂ (0.80 Å) is longer than
#: 1.25 x twice hydrogen's covalent radius (0.775 Å).
MIN_BOND_CUTOFF = 1.0


def bond_graph(atoms: Atoms, bond_scale: float = 1.25) -> frozenset[tuple[int, int]]:
    """Bonds (i < j) between atoms closer than ``bond_scale`` x the sum of covalent radii
    (or than :data:`MIN_BOND_CUTOFF`).

    Args:
        atoms: a molecule (N atoms, Å; no periodic boundaries).
        bond_scale: multiple of ASE's ``natural_cutoffs`` sum (covalent radii, Å).

    Returns:
        The set of bonded index pairs.
    """
    from ase.data import covalent_radii

    pos = atoms.get_positions()
    radii = covalent_radii[atoms.get_atomic_numbers()]
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    limit = np.maximum(bond_scale * (radii[:, None] + radii[None, :]), MIN_BOND_CUTOFF)
    i, j = np.nonzero(np.triu(dist < limit, k=1))
    return frozenset(zip(i.tolist(), j.tolist()))


def graph_key(numbers: Sequence[int], bonds: frozenset[tuple[int, int]] | set) -> str:
    """Canonical connectivity string of a molecular graph (labels ignored).

    RDKit canonical SMILES of the graph with every atom explicit (hydrogens included) and every
    bond single, e.g. ``"[H][C]([H])([H])[O][H]"`` for methanol: two geometries give the same
    key exactly when their bond graphs are isomorphic with elements matched.

    Args:
        numbers: atomic numbers (N,).
        bonds: bonded pairs (i, j).

    Returns:
        The key.
    """
    from rdkit import Chem

    mol = Chem.RWMol()
    for z in numbers:
        atom = Chem.Atom(int(z))
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    for i, j in sorted(bonds):
        mol.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    mol = mol.GetMol()
    mol.UpdatePropertyCache(strict=False)
    return Chem.MolToSmiles(mol, canonical=True, allHsExplicit=True, allBondsExplicit=False)


def graph_key_of_smiles(smiles: str) -> str:
    """:func:`graph_key` of a SMILES string (hydrogens added, bond orders dropped).

    Raises:
        ValueError: RDKit cannot parse ``smiles``.
    """
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InvalidArgumentError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    bonds = {(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()}
    return graph_key(numbers, bonds)


def smiles_of(atoms: Atoms, charge: int = 0, bond_scale: float = 1.25) -> str:
    """SMILES of a geometry (RDKit ``DetermineBondOrders`` on the :func:`bond_graph`).

    Several fragments come out dot-separated. When bond orders cannot be assigned (radicals,
    unusual valences), the connectivity key of :func:`graph_key` is returned instead.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    numbers = atoms.get_atomic_numbers()
    bonds = bond_graph(atoms, bond_scale)
    mol = Chem.RWMol()
    for z in numbers:
        mol.AddAtom(Chem.Atom(int(z)))
    for i, j in sorted(bonds):
        mol.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    conformer = Chem.Conformer(len(numbers))
    for i, xyz in enumerate(atoms.get_positions()):
        conformer.SetAtomPosition(i, xyz.tolist())
    mol.AddConformer(conformer, assignId=True)
    try:
        rdDetermineBonds.DetermineBondOrders(mol, charge=int(charge))
        Chem.SanitizeMol(mol)
        return Chem.MolToSmiles(Chem.RemoveHs(mol))
    except Exception:  # noqa: BLE001 - RDKit raises ValueError / RuntimeError / its own errors
        return graph_key(numbers, bonds)


def reaction_type(numbers: np.ndarray, a: frozenset, b: frozenset) -> str:
    """Bonds broken (``-``) and formed (``+``) from bond graph ``a`` to ``b``, as element
    pairs: e.g. ``"-C-H -C-H +H-H"`` for an H₂ elimination.

    Args:
        numbers: atomic numbers (N,).
        a: bonds of the first end.
        b: bonds of the second end.
    """
    from ase.data import chemical_symbols

    def name(i: int, j: int) -> str:
        return "-".join(sorted((chemical_symbols[numbers[i]], chemical_symbols[numbers[j]])))

    broken = sorted(name(i, j) for i, j in a - b)
    formed = sorted(name(i, j) for i, j in b - a)
    return " ".join([f"-{n}" for n in broken] + [f"+{n}" for n in formed])


def fragment_sizes(n_atoms: int, bonds: frozenset[tuple[int, int]]) -> list[int]:
    """Atom counts of the connected components (fragments) of a bond graph, largest first.

    Args:
        n_atoms: N.
        bonds: bonded pairs (i, j).
    """
    parent = list(range(n_atoms))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in bonds:
        parent[root(i)] = root(j)
    counts: dict[int, int] = {}
    for i in range(n_atoms):
        counts[root(i)] = counts.get(root(i), 0) + 1
    return sorted(counts.values(), reverse=True)
