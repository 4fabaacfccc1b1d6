"""AtomicGraph construction, validation errors and the pair graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

import hip_head.graph as graph_module
from hip_head import AtomicGraph, InvalidStructureError, build_pair_graph
from hip_head.graph import all_pairs, pair_vectors


def test_batch_and_ptr(small_molecules):
    graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
    assert graph.num_graphs == 3
    assert graph.ptr.tolist() == [0, 9, 12, 17]
    assert graph.batch.tolist() == [0] * 9 + [1] * 3 + [2] * 5
    assert graph.positions.dtype == torch.float64
    assert not graph.is_periodic


def test_pair_graph_is_complete_within_each_molecule_and_reverse_is_right(small_molecules):
    graph = AtomicGraph.from_ase(small_molecules)
    pairs = build_pair_graph(graph, float("inf"))
    assert pairs.num_pairs == 9 * 8 + 3 * 2 + 5 * 4
    a, b = pairs.index
    assert bool((graph.batch[a] == graph.batch[b]).all()) and bool((a != b).all())
    assert torch.equal(pairs.index[:, pairs.reverse], pairs.index.flip(0))


def test_pair_graph_cutoff_drops_far_pairs():
    atoms = Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]])
    pairs = build_pair_graph(AtomicGraph.from_ase(atoms), cutoff=3.0)
    assert sorted(map(tuple, pairs.index.T.tolist())) == [(0, 1), (1, 0)]


def test_minimum_image_in_periodic_cells():
    atoms = Atoms("H2", positions=[[0.2, 0, 0], [3.8, 0, 0]], cell=[4.0, 4.0, 4.0], pbc=True)
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float64)
    pairs = build_pair_graph(graph, cutoff=1.9)
    assert pairs.num_pairs == 2
    assert np.allclose(pairs.lengths.numpy(), 0.4)


def test_nan_position_names_the_atom():
    atoms = molecule("H2O")
    atoms.positions[1, 2] = np.nan
    with pytest.raises(InvalidStructureError, match=r"atom 1 \(H\).*non-finite"):
        AtomicGraph.from_ase(atoms)


def test_inf_position_in_second_structure():
    bad = molecule("CH4")
    bad.positions[3, 0] = np.inf
    with pytest.raises(InvalidStructureError, match=r"structure 1: atom 3"):
        AtomicGraph.from_ase([molecule("H2O"), bad])


def test_coincident_atoms_are_reported():
    atoms = Atoms("CO", positions=[[0, 0, 0], [0, 0, 0.01]])
    with pytest.raises(InvalidStructureError, match=r"atoms 0 \(C\) and 1 \(O\).*coincident"):
        AtomicGraph.from_ase(atoms)


def test_empty_inputs_are_rejected():
    with pytest.raises(InvalidStructureError, match="empty"):
        AtomicGraph.from_ase(Atoms())
    with pytest.raises(InvalidStructureError, match="no structures"):
        AtomicGraph.from_ase([])
    with pytest.raises(InvalidStructureError, match="structure 1 is empty"):
        AtomicGraph.from_ase([molecule("H2O"), Atoms()])


def test_single_atom_has_no_pairs():
    graph = AtomicGraph.from_ase(Atoms("Ne"))
    assert build_pair_graph(graph, float("inf")).num_pairs == 0


def test_pair_graph_matches_every_pair_filtered_by_the_cutoff():
    rng = np.random.default_rng(0)
    structures = [
        Atoms("C30", positions=rng.uniform(0, 9, (30, 3))),
        Atoms("H12", positions=rng.uniform(0, 5, (12, 3))),
    ]
    graph = AtomicGraph.from_ase(structures, dtype=torch.float64)
    pairs = build_pair_graph(graph, cutoff=4.0)
    every = all_pairs(graph)
    lengths = pair_vectors(graph, every).norm(dim=-1)
    assert torch.equal(pairs.index, every[:, lengths < 4.0])  # same pairs, same order
    assert torch.allclose(pairs.lengths, lengths[lengths < 4.0], atol=0)
    assert not pairs.shifts.any()


def test_neither_validation_nor_the_pair_graph_enumerates_all_pairs(monkeypatch):
    def quadratic(*args, **kwargs):
        raise AssertionError("enumerated every pair")

    monkeypatch.setattr(graph_module, "pairs_within_structures", quadratic)
    monkeypatch.setattr(graph_module, "all_pairs", quadratic)
    rng = np.random.default_rng(1)
    atoms = Atoms("C400", positions=rng.uniform(0, 40, (400, 3)))
    graph = AtomicGraph.from_ase(atoms)
    assert 0 < build_pair_graph(graph, cutoff=5.0).num_pairs < 400 * 399 // 4


def test_small_periodic_cell_lists_every_image_with_its_shift():
    cell = np.array([[2.5, 0, 0], [0.6, 2.7, 0], [0.2, -0.4, 2.9]])
    atoms = Atoms("CO", positions=[[0.1, 0.2, 0.3], [1.2, 1.1, 1.5]], cell=cell, pbc=True)
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float64)
    pairs = build_pair_graph(graph, cutoff=4.0)
    a, b = pairs.index
    expected = graph.positions[b] - graph.positions[a] + pairs.shifts.double() @ graph.cell[0]
    assert torch.allclose(pairs.vectors, expected, atol=1e-12)
    assert bool((pairs.lengths < 4.0).all())
    assert bool((a == b).any())  # an atom pairs with its own images
    assert torch.equal(pairs.index[:, pairs.reverse], pairs.index.flip(0))
    assert torch.equal(pairs.shifts[pairs.reverse], -pairs.shifts)
    assert pairs.num_pairs == len(neighbor_list("i", atoms, 4.0))


def test_periodic_structures_need_a_finite_cutoff():
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=[3.0, 3.0, 3.0], pbc=True)
    with pytest.raises(ValueError, match="finite hessian_cutoff"):
        build_pair_graph(AtomicGraph.from_ase(atoms), float("inf"))


def test_coincident_atoms_across_the_periodic_boundary():
    atoms = Atoms("CO", positions=[[0.02, 1, 1], [3.97, 1, 1]], cell=[4.0, 4.0, 4.0], pbc=True)
    with pytest.raises(InvalidStructureError, match=r"atoms 0 \(C\) and 1 \(O\) are 0.05 Å"):
        AtomicGraph.from_ase(atoms)


def test_singular_periodic_cell_names_the_structure():
    bad = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]])
    bad.pbc = True
    with pytest.raises(InvalidStructureError, match="structure 1: the cell"):
        AtomicGraph.from_ase([molecule("H2O"), bad])


def test_pair_graph_is_full_precision_under_autocast():
    rng = np.random.default_rng(3)
    atoms = Atoms("C8", positions=rng.uniform(0, 3.1, (8, 3)), cell=[3.1, 3.3, 3.5], pbc=True)
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float32)
    plain = build_pair_graph(graph, cutoff=4.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = build_pair_graph(graph, cutoff=4.0)
    assert torch.equal(mixed.index, plain.index) and torch.equal(mixed.shifts, plain.shifts)
    assert mixed.vectors.dtype == torch.float32
    assert torch.equal(mixed.vectors, plain.vectors)
