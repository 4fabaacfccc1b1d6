"""The fairchem UMA / eSEN-md adapter passes the test kit and leaves the energy alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("fairchem.core")

import hip_head  # noqa: E402
from hip_head.adapters.uma import UMAAdapter, make_random_uma  # noqa: E402
from tests.adapters.kit_checks import (  # noqa: E402
    assert_features_rotate_with_e3nn,
    assert_passes_the_kit,
    molecules_graph,
)

pytestmark = pytest.mark.fairchem

ELEMENTS = (1, 6, 7, 8)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_random_uma(sphere_channels=8, hidden_channels=8, num_layers=2)


def test_uma_passes_the_kit(model):
    assert_passes_the_kit(
        model, parity=False, elements=ELEMENTS, max_examples=3, max_atoms=8, channels=8
    )


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
    assert_features_rotate_with_e3nn(UMAAdapter(model), molecules_graph())


def test_make_random_uma_leaves_the_global_rng_and_dtype_alone():
    rng, dtype = torch.get_rng_state(), torch.get_default_dtype()
    first = make_random_uma(sphere_channels=4, hidden_channels=4, num_layers=1, seed=5)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_default_dtype() == dtype
    second = make_random_uma(sphere_channels=4, hidden_channels=4, num_layers=1, seed=5)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)  # the seed alone decides the weights
