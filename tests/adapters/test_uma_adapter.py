"""The fairchem UMA / eSEN-md adapter passes the test kit and leaves the energy alone."""

from __future__ import annotations

import ase.build
import pytest
import torch
from torch import nn

pytest.importorskip("fairchem.core")

import hip_head  # noqa: E402
from hip_head._e3nn import o3  # noqa: E402
from hip_head.adapters.uma import UMAAdapter, make_random_uma  # noqa: E402
from hip_head.graph import AtomicGraph  # noqa: E402
from hip_head.testing import check_adapter  # noqa: E402

pytestmark = pytest.mark.fairchem

ELEMENTS = (1, 6, 7, 8)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_random_uma(sphere_channels=8, hidden_channels=8, num_layers=2)


def molecules_graph(dtype=torch.float64) -> AtomicGraph:
    atoms = [ase.build.molecule(name) for name in ("H2O", "CH3CH2OH", "NH3")]
    return AtomicGraph.from_ase(atoms, dtype=dtype)


def sh_wigner_d(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """[2l+1, 2l+1] D(R) fitted from e3nn's spherical harmonics (exact in float64)."""
    x = torch.randn(100, 3, dtype=torch.float64)
    y = o3().spherical_harmonics(l, x, normalize=True)
    y_rot = o3().spherical_harmonics(l, x @ rotation.T, normalize=True)
    return torch.linalg.lstsq(y, y_rot).solution.T


def test_uma_passes_the_kit(model):
    report = check_adapter(
        model,
        dtypes=(torch.float32, torch.float64),
        elements=ELEMENTS,
        max_examples=3,
        max_atoms=8,
        channels=8,
    )
    print(report)
    assert report.native_checked
    assert report.reflections_checked is False
    worst64 = {
        prop: err
        for (dtype, prop), err in report.worst.items()
        if dtype == "float64" and prop in ("rotation", "translation", "permutation")
    }
    assert worst64 and max(worst64.values()) < 1e-10, worst64


def test_wrap_picks_uma_and_matches_is_strict(model):
    wrapped = hip_head.wrap(model, channels=8)
    assert isinstance(wrapped.adapter, UMAAdapter)
    assert not UMAAdapter.matches(nn.Linear(3, 3))
    assert not UMAAdapter.matches(model.backbone)  # the bare backbone has no energy head
    adapter = wrapped.adapter
    assert str(adapter.node_irreps) == "8x0e+8x1o+8x2e"
    assert adapter.cutoff == 5.0 and adapter.task_name == "omol"
    with pytest.raises(ValueError, match="task_name"):
        UMAAdapter(model, task_name="omat")


def test_energy_and_forces_equal_the_model(model):
    graph = molecules_graph()
    adapter = UMAAdapter(model)
    native_energy, native_forces = adapter.native_energy_forces(graph)
    positions = graph.positions.clone().requires_grad_(True)
    energy = adapter(graph.with_positions(positions)).energy
    forces = -torch.autograd.grad(energy.sum(), positions)[0]
    torch.testing.assert_close(energy.detach(), native_energy, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(forces, native_forces, rtol=1e-6, atol=1e-6)
    assert float(forces.abs().max()) > 1e-6  # the energy really depends on the positions


def test_l1_and_l2_features_rotate_with_e3nn_wigner_d(model):
    """The layout conversion is derived: features must rotate by e3nn's D of each l."""
    adapter = UMAAdapter(model)
    graph = molecules_graph()
    rotation = o3().rand_matrix(dtype=torch.float64)
    with torch.no_grad():
        feats = adapter(graph).node_feats
        feats_rot = adapter(graph.with_positions(graph.positions @ rotation.T)).node_feats
    irreps = adapter.node_irreps
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        d = sh_wigner_d(ir.l, rotation)
        x = feats[:, sl].reshape(-1, mul, ir.dim)
        y = feats_rot[:, sl].reshape(-1, mul, ir.dim)
        torch.testing.assert_close(x @ d.T, y, rtol=0, atol=1e-10)
