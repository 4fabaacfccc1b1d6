"""The radius search: exact agreement with brute force and with ASE, periodic images included."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list
from hypothesis import given, settings
from hypothesis import strategies as st

import hip_head.neighbors as neighbors
from hip_head import InvalidStructureError
from hip_head.neighbors import radius_graph


def _as_set(index: torch.Tensor, shifts: torch.Tensor) -> list[tuple[int, int, tuple[int, ...]]]:
    return [
        (i, j, tuple(s))
        for i, j, s in zip(index[0].tolist(), index[1].tolist(), shifts.tolist(), strict=True)
    ]


def _brute_force(positions, batch, cell, pbc, cutoff, self_interaction=False):
    """Every (i, j, S) within ``cutoff`` by enumerating atom pairs and a generous image range."""
    positions, batch = positions.numpy(), batch.numpy()
    found = []
    for g in np.unique(batch):
        atoms = np.nonzero(batch == g)[0]
        periodic = np.zeros(3, bool) if pbc is None else pbc[g].numpy()
        lattice = np.zeros((3, 3)) if cell is None else cell[g].numpy()
        if periodic.any():
            # Every vector shorter than the cutoff has |fractional component k| <= cutoff*|b_k|.
            inverse = np.linalg.inv(lattice)
            reach = np.ceil(cutoff * np.linalg.norm(inverse, axis=0)).astype(int) + 1
        for i, j in itertools.product(atoms, atoms):
            delta = positions[j] - positions[i]
            ranges = []
            for k in range(3):
                if periodic[k]:
                    centre = -int(np.round((delta @ inverse)[k]))
                    ranges.append(range(centre - reach[k], centre + reach[k] + 1))
                else:
                    ranges.append(range(0, 1))
            for shift in itertools.product(*ranges):
                if i == j and not any(shift) and not self_interaction:
                    continue
                vec = torch.as_tensor(delta + np.asarray(shift, float) @ lattice)
                vec = vec.to(torch.float64 if positions.dtype == np.float64 else torch.float32)
                if float(vec.norm()) < cutoff:
                    found.append((int(i), int(j), tuple(int(s) for s in shift)))
    return sorted(found)


def _check(positions, batch, cell, pbc, cutoff, self_interaction=False):
    index, shifts = radius_graph(
        positions, cutoff, batch, cell, pbc, self_interaction=self_interaction
    )
    got = _as_set(index, shifts)
    assert got == sorted(got), "pairs must be sorted by i, j, shift"
    assert got == _brute_force(positions, batch, cell, pbc, cutoff, self_interaction)
    return index, shifts


def _ase_set(atoms: Atoms, cutoff: float) -> list[tuple[int, int, tuple[int, ...]]]:
    i, j, shift = neighbor_list("ijS", atoms, cutoff)
    return sorted(
        (int(a), int(b), tuple(int(x) for x in s)) for a, b, s in zip(i, j, shift, strict=True)
    )


def _from_atoms(atoms: Atoms, cutoff: float):
    index, shifts = radius_graph(
        torch.tensor(atoms.positions),
        cutoff,
        torch.zeros(len(atoms), dtype=torch.long),
        torch.tensor(atoms.cell.array)[None],
        torch.tensor(atoms.pbc)[None],
    )
    return _as_set(index, shifts)


# --------------------------------------------------------------------------- vs ASE
TRICLINIC = [[3.1, 0.0, 0.0], [1.2, 2.9, 0.0], [0.6, -0.8, 2.7]]


@pytest.mark.parametrize(
    ("pbc", "cutoff"),
    [
        ((True, True, True), 2.5),  # cell larger than the cutoff
        ((True, True, True), 7.0),  # cell much smaller than twice the cutoff: many images
        ((True, True, False), 5.0),  # slab
        ((True, False, False), 4.0),  # wire
        ((False, True, True), 3.3),
    ],
)
def test_matches_ase_triclinic(pbc, cutoff):
    rng = np.random.default_rng(1)
    atoms = Atoms("H7", positions=rng.uniform(-2.0, 6.0, (7, 3)), cell=TRICLINIC, pbc=pbc)
    assert _from_atoms(atoms, cutoff) == _ase_set(atoms, cutoff)


def test_matches_ase_for_a_bulk_crystal():
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    assert _from_atoms(atoms, 4.5) == _ase_set(atoms, 4.5)


def test_matches_ase_for_a_slab_with_a_zero_vacuum_vector():
    rng = np.random.default_rng(2)
    atoms = Atoms(
        "H6",
        positions=rng.uniform(0.0, 3.0, (6, 3)),
        cell=[[2.5, 0, 0], [0.7, 2.2, 0], [0, 0, 0]],
        pbc=[True, True, False],
    )
    assert _from_atoms(atoms, 4.0) == _ase_set(atoms, 4.0)


# --------------------------------------------------------------------------- vs brute force
@st.composite
def systems(draw):
    """A batch of 1-3 small structures; each periodic along a random set of axes or none."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    cutoff = draw(st.floats(0.5, 5.0))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    cells, pbcs = [], []
    for _ in sizes:
        lengths = rng.uniform(1.2, 6.0, 3)
        lattice = np.diag(lengths) + np.triu(rng.uniform(-0.5, 0.5, (3, 3)), 1) * lengths[:, None]
        cells.append(lattice)
        pbcs.append(draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    positions = rng.uniform(-3.0, 9.0, (sum(sizes), 3))
    batch = np.repeat(np.arange(len(sizes)), sizes)
    return (
        torch.tensor(positions),
        torch.tensor(batch),
        torch.tensor(np.stack(cells)),
        torch.tensor(pbcs),
        cutoff,
    )


@settings(max_examples=60, deadline=None)
@given(systems(), st.booleans())
def test_matches_brute_force_on_random_systems(system, self_interaction):
    positions, batch, cell, pbc, cutoff = system
    index, shifts = _check(positions, batch, cell, pbc, cutoff, self_interaction)
    # Both directions: (i, j, S) and (j, i, -S).
    pairs = set(_as_set(index, shifts))
    assert pairs == {(j, i, tuple(-s for s in shift)) for i, j, shift in pairs}


def test_molecules_without_a_cell():
    rng = np.random.default_rng(4)
    positions = torch.tensor(rng.uniform(0, 12, (120, 3)))
    batch = torch.tensor(np.repeat([0, 1, 2], [50, 30, 40]))
    index, shifts = _check(positions, batch, None, None, 3.0)
    assert not shifts.any()


def test_unsorted_batch_and_float32():
    rng = np.random.default_rng(5)
    positions = torch.tensor(rng.uniform(0, 5, (40, 3)), dtype=torch.float32)
    batch = torch.tensor(rng.integers(0, 3, 40))
    _check(positions, batch, None, None, 2.0)


def test_mixed_batch_of_periodic_and_molecular_structures():
    rng = np.random.default_rng(6)
    positions = torch.tensor(rng.uniform(0, 4, (20, 3)))
    batch = torch.tensor(np.repeat([0, 1], [10, 10]))
    cell = torch.tensor(np.stack([np.diag([3.0, 3.5, 4.0]), np.zeros((3, 3))]))
    pbc = torch.tensor([[True, True, True], [False, False, False]])
    _check(positions, batch, cell, pbc, 3.7)


def test_chunked_search_is_identical(monkeypatch):
    rng = np.random.default_rng(7)
    positions = torch.tensor(rng.uniform(0, 10, (300, 3)))
    batch = torch.zeros(300, dtype=torch.long)
    cell = torch.tensor(np.diag([10.0, 10.0, 10.0]))[None]
    pbc = torch.tensor([[True, False, True]])
    whole = radius_graph(positions, 3.0, batch, cell, pbc)
    monkeypatch.setattr(neighbors, "_CHUNK", 97)
    chunked = radius_graph(positions, 3.0, batch, cell, pbc)
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked, strict=True))


def test_infinite_cutoff_lists_every_pair_of_each_structure():
    positions = torch.randn(9, 3) * 100
    batch = torch.tensor([0] * 4 + [1] * 5)
    index, shifts = radius_graph(positions, math.inf, batch)
    assert index.shape[1] == 4 * 3 + 5 * 4
    assert bool((batch[index[0]] == batch[index[1]]).all()) and bool((index[0] != index[1]).all())
    index, _ = radius_graph(positions, math.inf, batch, self_interaction=True)
    assert index.shape[1] == 16 + 25


def test_far_apart_atoms_in_a_huge_structure():
    positions = torch.tensor([[0.0, 0, 0], [0.05, 0, 0], [1e9, 0, 0], [1e9, 1e9, 1e9]])
    index, _ = radius_graph(positions, 0.1, torch.zeros(4, dtype=torch.long))
    assert index.tolist() == [[0, 1], [1, 0]]


def test_indices_carry_no_gradient_and_vectors_do():
    atoms = Atoms("H4", positions=np.eye(4, 3) * 1.5, cell=[2.0, 2.0, 2.0], pbc=True)
    positions = torch.tensor(atoms.positions, requires_grad=True)
    cell = torch.tensor(atoms.cell.array)[None]
    batch = torch.zeros(4, dtype=torch.long)
    index, shifts = radius_graph(positions, 2.5, batch, cell, torch.tensor(atoms.pbc)[None])
    assert not index.requires_grad and not shifts.requires_grad
    i, j = index
    vec = positions[j] - positions[i] + torch.einsum("ek,ekl->el", shifts.double(), cell[batch[i]])
    vec.norm(dim=-1).sum().backward()
    assert positions.grad is not None
    assert bool((vec.detach().norm(dim=-1) < 2.5).all())


def test_empty_input():
    index, shifts = radius_graph(torch.zeros(0, 3), 1.0, torch.zeros(0, dtype=torch.long))
    assert index.shape == (2, 0) and shifts.shape == (0, 3)


# --------------------------------------------------------------------------- bad input
def test_singular_cell_names_the_structure():
    positions = torch.rand(4, 3)
    batch = torch.tensor([0, 0, 1, 1])
    cell = torch.tensor(np.stack([np.eye(3) * 3.0, [[2.0, 0, 0], [4.0, 0, 0], [0, 0, 2.0]]]))
    with pytest.raises(InvalidStructureError, match="structure 1: the cell .* singular"):
        radius_graph(positions, 1.0, batch, cell, torch.ones(2, 3, dtype=torch.bool))


def test_zero_periodic_vector_is_singular():
    with pytest.raises(InvalidStructureError, match="structure 0"):
        radius_graph(
            torch.rand(2, 3),
            1.0,
            torch.zeros(2, dtype=torch.long),
            torch.zeros(1, 3, 3),
            torch.tensor([[True, False, False]]),
        )


def test_infinite_cutoff_with_periodic_structure_is_refused():
    with pytest.raises(ValueError, match="infinite cutoff"):
        radius_graph(
            torch.rand(2, 3),
            math.inf,
            torch.zeros(2, dtype=torch.long),
            torch.eye(3)[None],
            torch.ones(1, 3, dtype=torch.bool),
        )


def test_non_finite_position_is_refused():
    positions = torch.rand(3, 3)
    positions[2, 1] = float("nan")
    with pytest.raises(InvalidStructureError, match="structure 0: atom 2"):
        radius_graph(positions, 1.0, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan")])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        radius_graph(torch.rand(2, 3), cutoff, torch.zeros(2, dtype=torch.long))
