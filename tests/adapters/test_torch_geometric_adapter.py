"""The torch-geometric adapters (SchNet, ViSNet) pass the test kit and leave the energy alone."""

from __future__ import annotations

import sys

import ase.build
import pytest
import torch
from torch import nn

import hip_head
from hip_head._e3nn import float64_default
from hip_head.adapters import neighbor_edges
from hip_head.adapters.torch_geometric import (
    RadiusDistance,
    RadiusGraph,
    SchNetAdapter,
    ViSNetAdapter,
)
from hip_head.graph import AtomicGraph
from tests.adapters.kit_checks import assert_passes_the_kit

pytestmark = pytest.mark.pyg

models = pytest.importorskip("torch_geometric.nn.models")


def make_schnet(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    options = dict(
        hidden_channels=8, num_filters=8, num_interactions=2, num_gaussians=10, cutoff=4.0
    )
    return models.SchNet(**{**options, **kwargs}).double().eval()


def make_visnet(lmax: int = 1, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    options = dict(lmax=lmax, num_heads=2, num_layers=2, hidden_channels=8, num_rbf=8, cutoff=4.0)
    return models.ViSNet(**{**options, **kwargs}).double().eval()


def molecules_graph(dtype=torch.float64) -> AtomicGraph:
    atoms = [ase.build.molecule(name) for name in ("H2O", "CH3CH2OH", "NH3")]
    return AtomicGraph.from_ase(atoms, dtype=dtype)


def brute_force_radius_graph(x, r, batch=None, loop=False, max_num_neighbors=32, **_):
    """Reference neighbour search standing in for pyg-lib's (source_to_target flow)."""
    batch = torch.zeros(x.shape[0], dtype=torch.long) if batch is None else batch
    d = torch.cdist(x.detach(), x.detach())
    ok = (d < r) & (batch[:, None] == batch[None, :])
    if not loop:
        ok.fill_diagonal_(False)
    target, source = ok.nonzero().T
    return torch.stack([source, target])


@pytest.fixture
def bare_pyg(monkeypatch):
    """Let the bare models run without pyg-lib / torch-cluster (only in this test)."""
    for name in ("schnet", "visnet"):
        module = sys.modules[f"torch_geometric.nn.models.{name}"]
        monkeypatch.setattr(module, "radius_graph", brute_force_radius_graph)


def _check(backbone, parity: bool):
    assert_passes_the_kit(backbone, parity=parity, max_examples=4, max_atoms=8, channels=8)


def test_schnet_passes_the_kit():
    _check(make_schnet(), parity=True)


@pytest.mark.parametrize("lmax", [1, 2])
def test_visnet_passes_the_kit(lmax):
    _check(make_visnet(lmax=lmax, vecnorm_type="max_min" if lmax == 2 else None), parity=True)


def test_wrap_picks_the_adapter_and_matches_is_strict():
    assert isinstance(hip_head.wrap(make_schnet(), channels=8).adapter, SchNetAdapter)
    assert isinstance(hip_head.wrap(make_visnet(), channels=8).adapter, ViSNetAdapter)
    linear = nn.Linear(3, 3)
    assert not SchNetAdapter.matches(linear) and not ViSNetAdapter.matches(linear)
    assert not SchNetAdapter.matches(make_visnet())
    assert not ViSNetAdapter.matches(make_schnet())


def test_irreps_cutoff_and_elements():
    schnet = SchNetAdapter(make_schnet())
    assert str(schnet.node_irreps) == "8x0e" and schnet.cutoff == 4.0
    assert schnet.supported_atomic_numbers == list(range(1, 100))
    visnet = ViSNetAdapter(make_visnet(lmax=2))
    assert str(visnet.node_irreps) == "8x0e+8x1o+8x2e"
    out = visnet(molecules_graph())
    assert out.node_feats.shape == (16, visnet.node_irreps.dim)


@pytest.mark.parametrize("lmax", [1, 2])
def test_energy_and_forces_equal_the_bare_model(bare_pyg, lmax):
    graph = molecules_graph()
    for backbone in (make_schnet(), make_visnet(lmax=lmax)):
        positions = graph.positions.clone().requires_grad_(True)
        # PyG's ViSNet Distance allocates distances in the default dtype: a float64 ViSNet runs
        # bare only with float64 as the default (the adapter does not need this)
        with float64_default():
            bare = backbone(graph.atomic_numbers, positions, graph.batch)
        bare = (bare[0] if isinstance(bare, tuple) else bare).reshape(-1)
        bare_forces = -torch.autograd.grad(bare.sum(), positions)[0]
        adapter = hip_head.wrap(backbone, channels=8).adapter
        graph.positions.requires_grad_(True)
        energy = adapter(graph).energy
        forces = -torch.autograd.grad(energy.sum(), graph.positions)[0]
        graph.positions.requires_grad_(False)
        torch.testing.assert_close(energy, bare.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(forces, bare_forces, rtol=1e-6, atol=1e-6)


def test_visnet_native_forces_use_its_derivative_path():
    backbone = make_visnet(derivative=True)
    adapter = ViSNetAdapter(backbone)
    graph = molecules_graph()
    energy, forces = adapter.native_energy_forces(graph)
    graph.positions.requires_grad_(True)
    out = adapter(graph).energy
    reference = -torch.autograd.grad(out.sum(), graph.positions)[0]
    torch.testing.assert_close(energy, out.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forces, reference, rtol=1e-10, atol=1e-10)
    assert backbone.derivative is True  # the view switched it off, the model was not touched


def test_custom_schnet_interaction_graph_runs_bare_and_is_used_as_is():
    backbone = make_schnet(interaction_graph=RadiusGraph(4.0))
    graph = molecules_graph()
    bare = backbone(graph.atomic_numbers, graph.positions, graph.batch).reshape(-1)
    energy = SchNetAdapter(backbone)(graph).energy
    torch.testing.assert_close(energy, bare, rtol=1e-12, atol=1e-12)


def test_neighbour_search_warns_beyond_max_num_neighbors():
    pos = torch.randn(6, 3, dtype=torch.float64) * 0.1
    batch = torch.zeros(6, dtype=torch.long)
    with pytest.warns(UserWarning, match="max_num_neighbors=2"):
        edges, _ = neighbor_edges(pos, batch, 5.0, max_neighbors=2, limit_name="max_num_neighbors")
    assert edges.shape == (2, 30)
    with pytest.warns(UserWarning, match="max_num_neighbors=2"):
        index, distance, vectors = RadiusDistance(5.0, max_num_neighbors=2)(pos, batch)
    assert index.shape == (2, 36)  # self-loops included, as ViSNet's default
    loops = index[0] == index[1]
    assert int(loops.sum()) == 6 and bool((distance[loops] == 0).all())
    torch.testing.assert_close(vectors, pos[index[0]] - pos[index[1]])


def test_schnet_dipole_model_is_refused():
    with pytest.raises(ValueError, match="dipole"):
        SchNetAdapter(make_schnet(dipole=True))
