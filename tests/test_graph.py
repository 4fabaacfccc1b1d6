"""AtomicGraph construction, validation errors and the pair graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from hip_head import AtomicGraph, InvalidStructureError, build_pair_graph


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
