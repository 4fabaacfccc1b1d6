"""HIPModel and wrap(): outputs, layouts, persistence and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import hip_head
import hip_head.graph as graph_module
from hip_head import (
    AtomicGraph,
    BlockSparseHessian,
    DenseHessianTooLargeError,
    NoAdapterError,
    UnsupportedElementError,
)
from hip_head import assemble as assemble_module
from hip_head.assemble import (
    atom_blocks_to_dense,
    dense_to_atom_blocks,
    dense_to_mace_layout,
    mace_layout_to_dense,
    split_flat,
)
from hip_head.units import ev_per_a2_to_hartree_per_bohr2, hartree_per_bohr2_to_ev_per_a2

pytestmark = pytest.mark.mace


@pytest.fixture(scope="module")
def hip(tiny_mace):
    return hip_head.wrap(tiny_mace, channels=8)


def test_outputs_have_documented_shapes(hip, small_molecules):
    graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
    out = hip(graph)
    assert out["energy"].shape == (3,)
    assert out["forces"].shape == (17, 3)
    assert out["hessian"].shape == ((27**2 + 9**2 + 15**2),)
    assert out["hessian"].requires_grad  # differentiable w.r.t. the head's parameters
    with torch.no_grad():
        assert not hip(graph)["hessian"].requires_grad


def test_flat_dense_and_block_sparse_agree(hip, small_molecules):
    graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
    flat = hip(graph)["hessian"]
    dense = hip(graph, hessian_output="dense")["hessian"]
    sparse = hip(graph, hessian_output="blocks")["hessian"]
    assert isinstance(sparse, BlockSparseHessian)
    for g, (from_flat, h) in enumerate(zip(split_flat(flat, graph.atoms_per_graph), dense)):
        assert torch.equal(from_flat, h)
        assert torch.equal(sparse.to_dense(g), h)
    full = torch.block_diag(*dense)
    v = torch.randn(graph.num_atoms, 3, dtype=torch.float64)
    assert torch.allclose(sparse.matvec(v).reshape(-1), full @ v.reshape(-1), atol=1e-12)
    assert torch.allclose(sparse.to_torch_sparse().to_dense(), full, atol=0)


def test_wrapping_leaves_energy_and_forces_unchanged(hip, tiny_mace, small_molecules):
    graph = AtomicGraph.from_ase(small_molecules, dtype=torch.float64)
    out = hip(graph)
    energy, forces = hip.adapter.native_energy_forces(graph)
    assert torch.allclose(out["energy"], energy, atol=1e-6, rtol=0)
    assert torch.allclose(out["forces"], forces, atol=1e-6, rtol=0)


def test_autograd_hessian_matches_mace_compute_hessian(tiny_mace):
    atoms = molecule("H2O")
    reference = hip_head.wrap(tiny_mace, hessian="autograd", channels=4)
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float64)
    (ours,) = reference(graph, hessian_output="dense")["hessian"]
    data = reference.adapter.input_dict(graph, graph.positions.clone().requires_grad_(True))
    theirs = tiny_mace(data, compute_force=True, compute_hessian=True)["hessian"]
    assert torch.allclose(ours, mace_layout_to_dense(theirs.detach()), atol=1e-8)


def test_predict_returns_numpy_and_a_single_atom_gives_a_3x3_block(hip):
    out = hip.predict(Atoms("O", positions=[[0.0, 0.0, 0.0]]))
    assert out["hessian"].shape == (3, 3)
    assert np.array_equal(out["hessian"], out["hessian"].T)
    batch = hip.predict([molecule("H2O"), molecule("CH4")])
    assert [b["hessian"].shape for b in batch] == [(9, 9), (15, 15)]


def test_save_and_load_round_trip(hip, tmp_path):
    path = tmp_path / "hip.pt"
    hip.save(path)
    loaded = hip_head.load(path)
    atoms = molecule("CH3CH2OH")
    assert np.array_equal(loaded.predict(atoms)["hessian"], hip.predict(atoms)["hessian"])
    assert not (tmp_path / "hip.pt.tmp").exists()
    (tmp_path / "junk.pt").write_bytes(b"")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a hip-head model"):
        hip_head.load(tmp_path / "other.pt")


def test_unknown_model_type_lists_registered_adapters():
    with pytest.raises(NoAdapterError, match=r"registered adapters: .*mace.*docs/adapters.md"):
        hip_head.wrap(torch.nn.Linear(3, 3))
    with pytest.raises(NoAdapterError, match="unknown adapter 'nope'"):
        hip_head.wrap(torch.nn.Linear(3, 3), adapter="nope")


def test_unknown_element_is_named(hip):
    with pytest.raises(UnsupportedElementError, match=r"Fe \(Z=26\).*supports: H, C, N, O"):
        hip.predict(Atoms("FeO", positions=[[0, 0, 0], [1.6, 0, 0]]))


def test_bad_positions_are_rejected_before_any_hessian(hip):
    graph = AtomicGraph.from_ase(molecule("H2O"), dtype=torch.float64)
    graph.positions[2, 0] = float("nan")
    with pytest.raises(hip_head.InvalidStructureError, match=r"atom 2 \(H\)"):
        hip(graph)


def test_dense_hessian_that_does_not_fit_points_to_block_sparse(hip, monkeypatch):
    monkeypatch.setattr(assemble_module, "available_memory_bytes", lambda device: 1000)
    graph = AtomicGraph.from_ase(molecule("CH3CH2OH"), dtype=torch.float64)
    with pytest.raises(DenseHessianTooLargeError, match="hessian_output='blocks'"):
        hip(graph)
    blocks = hip(graph, hessian_output="blocks")["hessian"]  # still works, no N² allocation
    assert blocks.blocks.shape == (9 + 9 * 8, 3, 3)


def test_layout_and_unit_converters_round_trip():
    h = torch.randn(12, 12, dtype=torch.float64)
    assert dense_to_atom_blocks(h).shape == (4, 3, 4, 3)
    assert torch.equal(atom_blocks_to_dense(dense_to_atom_blocks(h)), h)
    assert dense_to_mace_layout(h).shape == (12, 4, 3)
    assert torch.equal(mace_layout_to_dense(dense_to_mace_layout(h)), h)
    assert dense_to_atom_blocks(h)[1, 2, 3, 0] == h[3 * 1 + 2, 3 * 3 + 0]
    assert hartree_per_bohr2_to_ev_per_a2(1.0) == pytest.approx(97.1736, abs=1e-3)
    assert torch.allclose(hartree_per_bohr2_to_ev_per_a2(ev_per_a2_to_hartree_per_bohr2(h)), h)


def test_ase_calculator_returns_energy_forces_and_hessian(hip):
    from hip_head.calculator import HIPCalculator

    atoms = molecule("CH4")
    atoms.calc = HIPCalculator(hip)
    expected = hip.predict(atoms)
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], abs=1e-10)
    assert np.allclose(atoms.get_forces(), expected["forces"], atol=1e-10)
    assert np.allclose(atoms.calc.get_hessian(atoms), expected["hessian"], atol=1e-10)
    assert atoms.calc.hessian_function(atoms).shape == (15, 15)


def test_block_sparse_forward_never_enumerates_all_pairs(tiny_mace, monkeypatch):
    def quadratic(*args, **kwargs):
        raise AssertionError("enumerated every pair")

    monkeypatch.setattr(graph_module, "pairs_within_structures", quadratic)
    monkeypatch.setattr(graph_module, "all_pairs", quadratic)
    hip = hip_head.wrap(tiny_mace, channels=8, hessian_cutoff=4.0)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*(np.arange(4.0),) * 3, indexing="ij"), -1).reshape(-1, 3)
    atoms = Atoms("C64", positions=1.6 * grid + rng.uniform(-0.1, 0.1, (64, 3)))
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float64)
    sparse = hip(graph, hessian_output="blocks")["hessian"]
    assert len(sparse.rows) < 64 * 64  # block-sparse: only pairs within 4 Å


def test_periodic_cell_smaller_than_the_cutoff_flat_dense_and_blocks_agree(hip):
    water = molecule("H2O")
    water.set_cell([3.6, 3.8, 4.1])
    water.pbc = True
    water.positions += 0.3
    graph = AtomicGraph.from_ase(water, dtype=torch.float64)
    with torch.no_grad():
        (dense,) = hip(graph, hessian_output="dense")["hessian"]
        sparse = hip(graph, hessian_output="blocks")["hessian"]
    assert torch.equal(dense, dense.T)
    assert torch.equal(sparse.to_dense(0), dense)
