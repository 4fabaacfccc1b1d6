"""The fairchem-core 1.x EquiformerV2 adapter passes the test kit, on molecules and periodic cells.

Runs in the .venv-eqv2 environment (fairchem-core 1.10, torch 2.4); skipped elsewhere.
"""

from __future__ import annotations

import ase
import ase.build
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("fairchem.core.models.equiformer_v2.equiformer_v2")
pytest.importorskip("torch_scatter")  # imported by fairchem 1.x, not declared by it

import hip_head  # noqa: E402
from hip_head._e3nn import o3  # noqa: E402
from hip_head.adapters import default_dtype  # noqa: E402
from hip_head.adapters.equiformer_v2 import (  # noqa: E402
    EquiformerV2Adapter,
    make_random_equiformer_v2,
)
from hip_head.graph import AtomicGraph  # noqa: E402
from hip_head.testing import assert_hessian_equivariant  # noqa: E402
from tests.adapters.kit_checks import (  # noqa: E402
    assert_features_rotate_with_e3nn,
    assert_passes_the_kit,
    molecules_graph,
)

pytestmark = pytest.mark.eqv2

# Under torch < 2.10, e3nn 0.6 builds TorchScript-ed modules by default, which cannot be
# deep-copied or pickled; the head builds its e3nn parts in eager mode (hip_head._e3nn), which
# test_head_is_picklable_under_scripted_e3nn_defaults checks here, where that default is live.


ELEMENTS = (1, 6, 7, 8)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_random_equiformer_v2(sphere_channels=8, hidden_channels=8, num_layers=2)


def crystal(seed: int = 0, cell=(4.5, 4.75, 6.0), n: int = 3) -> ase.Atoms:
    """A random orthorhombic cell: with a 5 Å cutoff every atom meets its own images along x and
    y (an edge along ±y is the Euler-angle singularity of fairchem's Wigner matrices). The lengths
    are exact in float32, so fairchem's float32 cell offsets are exact too."""
    rng = np.random.default_rng(seed)
    while True:
        frac = rng.random((n, 3))
        atoms = ase.Atoms(
            numbers=rng.choice(ELEMENTS, n), scaled_positions=frac, cell=cell, pbc=True
        )
        if min(atoms.get_all_distances(mic=True)[np.triu_indices(n, 1)]) > 1.0:
            return atoms


def model_energy(adapter: EquiformerV2Adapter, graph: AtomicGraph, positions) -> torch.Tensor:
    """[B] energy of the unmodified model (its own graph, frames and heads)."""
    with torch.no_grad(), default_dtype(positions.dtype):
        return adapter._energy(adapter.backbone, adapter._batch(graph, positions)[0])


def finite_difference_forces(energy_fn, positions: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """-dE/dr [N, 3] by central differences of ``energy_fn(positions) -> [B]`` (float64)."""
    forces = torch.zeros_like(positions)
    for i in range(positions.shape[0]):
        for k in range(3):
            plus, minus = positions.clone(), positions.clone()
            plus[i, k] += h
            minus[i, k] -= h
            forces[i, k] = -(energy_fn(plus).sum() - energy_fn(minus).sum()) / (2 * h)
    return forces


def gradient_forces(adapter: EquiformerV2Adapter, graph: AtomicGraph):
    positions = graph.positions.clone().requires_grad_(True)
    energy = adapter(graph.with_positions(positions)).energy
    return energy.detach(), -torch.autograd.grad(energy.sum(), positions)[0]


def test_equiformer_v2_passes_the_kit(model):
    assert_passes_the_kit(
        model, parity=False, elements=ELEMENTS, max_examples=3, max_atoms=8, channels=8
    )


def test_wrap_picks_equiformer_v2_and_matches_is_strict(model):
    wrapped = hip_head.wrap(model, channels=8)
    assert isinstance(wrapped.adapter, EquiformerV2Adapter)
    assert not EquiformerV2Adapter.matches(nn.Linear(3, 3))
    assert not EquiformerV2Adapter.matches(model.backbone)  # no energy head
    adapter = wrapped.adapter
    assert str(adapter.node_irreps) == "8x0e+8x1o+8x2e"
    assert adapter.cutoff == 5.0 and adapter.energy_head == "energy"
    with pytest.raises(ValueError, match="energy_head"):
        EquiformerV2Adapter(model, energy_head="forces_typo")


def test_energy_is_the_model_s_and_forces_are_its_exact_gradient(model):
    graph = molecules_graph()
    adapter = EquiformerV2Adapter(model)
    energy, forces = gradient_forces(adapter, graph)
    native_energy, native_forces = adapter.native_energy_forces(graph)
    own = model_energy(adapter, graph, graph.positions)
    torch.testing.assert_close(energy, own, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(native_energy, own, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(forces, native_forces, rtol=1e-10, atol=1e-14)
    # -dE/dr of the unmodified model, by finite differences (first molecule)
    first = slice(0, 3)
    reference = finite_difference_forces(
        lambda p: model_energy(adapter, graph, p), graph.positions
    )[first]
    torch.testing.assert_close(forces[first], reference, rtol=0, atol=1e-8)
    assert float(forces.abs().max()) > 1e-4
    # autograd through the bare model misses the (detached) frames: not the forces
    positions = graph.positions.clone().requires_grad_(True)
    with default_dtype(torch.float64):
        bare = adapter._energy(model, adapter._batch(graph, positions)[0])
    bare_forces = -torch.autograd.grad(bare.sum(), positions)[0]
    assert float((bare_forces[first] - reference).abs().max()) > 1e-7


def test_direct_forces_are_the_model_s_force_head(model):
    graph = molecules_graph()
    adapter = EquiformerV2Adapter(model)
    direct = adapter.direct_forces(graph)
    with torch.no_grad(), default_dtype(torch.float64):
        out = model(adapter._batch(graph, graph.positions)[0])
    torch.testing.assert_close(direct, out["forces"]["forces"], rtol=1e-12, atol=1e-14)
    rotation = o3().rand_matrix(dtype=torch.float64)
    rotated = adapter.direct_forces(graph.with_positions(graph.positions @ rotation.T))
    torch.testing.assert_close(rotated, direct @ rotation.T, rtol=0, atol=1e-12)


def test_l1_and_l2_features_rotate_with_e3nn_wigner_d(model):
    """The basis conversion is derived: features must rotate by e3nn's D of each l."""
    assert_features_rotate_with_e3nn(EquiformerV2Adapter(model), molecules_graph())


def test_mirror_images_differ_so_parity_is_false(model):
    """SO(2) convolutions in edge frames are chiral: the mirror image has another energy."""
    adapter = EquiformerV2Adapter(model)
    atoms = ase.Atoms(
        "HCNOH", positions=[[0, 0, 0], [1.1, 0, 0], [0, 1.2, 0], [0, 0, 1.3], [1, 1, 1]]
    )
    mirror = atoms.copy()
    mirror.positions = -mirror.positions
    with torch.no_grad():
        energies = [
            adapter(AtomicGraph.from_ase(a, dtype=torch.float64)).energy for a in (atoms, mirror)
        ]
    assert float((energies[0] - energies[1]).abs()) > 1e-9 * float(energies[0].abs())
    assert EquiformerV2Adapter.parity is False


def test_periodic_cells(model):
    atoms = crystal()
    graph = AtomicGraph.from_ase(atoms, dtype=torch.float64)
    adapter = EquiformerV2Adapter(model)
    with default_dtype(torch.float64):
        vectors = adapter._prepare(graph, graph.positions)[1].edge_distance_vec
    along_y = (vectors[:, 1].abs() / vectors.norm(dim=-1) > 1 - 1e-12).sum()
    assert along_y > 0  # self-images along ±y: differentiating fairchem's angles gives NaN
    energy, forces = gradient_forces(adapter, graph)
    assert torch.isfinite(forces).all()
    torch.testing.assert_close(
        energy, model_energy(adapter, graph, graph.positions), rtol=1e-12, atol=1e-14
    )
    reference = finite_difference_forces(lambda p: model_energy(adapter, graph, p), graph.positions)
    torch.testing.assert_close(forces, reference, rtol=0, atol=1e-8)
    # the wrapped model is rotation-equivariant on cells too (positions and cell rotated)
    wrapped = hip_head.wrap(model, channels=8, hessian_cutoff=2.2)
    rotation = o3().rand_matrix(dtype=torch.float64).numpy()
    errors = assert_hessian_equivariant(wrapped, atoms, rotation, translation=np.ones(3))
    assert max(errors.values()) < 1e-10, errors
    # a batch mixing a cell and a molecule gives each its own energy
    mixed = AtomicGraph.from_ase([atoms, ase.build.molecule("H2O")], dtype=torch.float64)
    alone = AtomicGraph.from_ase([ase.build.molecule("H2O")], dtype=torch.float64)
    with torch.no_grad():
        batched = adapter(mixed).energy
        torch.testing.assert_close(batched[0], energy[0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(batched[1], adapter(alone).energy[0], rtol=1e-12, atol=1e-14)


def test_max_neighbors_truncation_is_the_model_s(model):
    dense = crystal(seed=1, cell=(3.5, 3.75, 4.0), n=4)  # ~45 neighbours within 5 Å, 20 kept
    graph = AtomicGraph.from_ase(dense, dtype=torch.float64)
    adapter = EquiformerV2Adapter(model)
    with default_dtype(torch.float64):
        edges = adapter._prepare(graph, graph.positions)[1]
    assert (torch.bincount(edges.edge_index[1]) == 20).all()  # truncated to max_neighbors
    with torch.no_grad():
        energy = adapter(graph).energy
    torch.testing.assert_close(
        energy, model_energy(adapter, graph, graph.positions), rtol=1e-12, atol=1e-14
    )


def test_monolithic_equiformer_v2():
    model = make_random_equiformer_v2(sphere_channels=8, hidden_channels=8, hydra=False)
    wrapped = hip_head.wrap(model, channels=8)
    adapter = wrapped.adapter
    assert isinstance(adapter, EquiformerV2Adapter) and not adapter.is_hydra
    graph = molecules_graph()
    energy, forces = gradient_forces(adapter, graph)
    torch.testing.assert_close(
        energy, model_energy(adapter, graph, graph.positions), rtol=1e-12, atol=1e-14
    )
    reference = finite_difference_forces(
        lambda p: model_energy(adapter, graph, p), graph.positions
    )[:3]
    torch.testing.assert_close(forces[:3], reference, rtol=0, atol=1e-8)
    with torch.no_grad(), default_dtype(torch.float64):
        own = model(adapter._batch(graph, graph.positions)[0])["forces"]
    torch.testing.assert_close(adapter.direct_forces(graph), own, rtol=1e-12, atol=1e-14)


def test_head_is_picklable_under_scripted_e3nn_defaults():
    import copy
    import io

    import e3nn

    from hip_head._e3nn import o3
    from hip_head.readout import HessianReadout

    mode = e3nn.get_optimization_defaults().get("jit_mode")
    head = HessianReadout(o3().Irreps("4x0e+4x1o+4x2e"), channels=4)
    copy.deepcopy(head)
    torch.save(head, io.BytesIO())
    assert e3nn.get_optimization_defaults().get("jit_mode") == mode  # restored


def test_make_random_equiformer_v2_leaves_the_global_rng_and_dtype_alone():
    rng, dtype = torch.get_rng_state(), torch.get_default_dtype()
    options = dict(sphere_channels=4, hidden_channels=8, num_layers=1, seed=5)
    first = make_random_equiformer_v2(**options)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_default_dtype() == dtype
    second = make_random_equiformer_v2(**options)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)  # the seed alone decides the weights
