"""The plumbing every adapter shares (``hip_head.adapters._common``), without any backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hip_head.adapters import (
    FeatureTap,
    default_dtype,
    gradient_energy_forces,
    l_major_to_e3nn,
    module_view,
    natural_irreps,
    neighbor_edges,
    seeded,
    tree_view,
)


class Shared(nn.Module):
    """Two blocks holding the same submodule (as fairchem's SO3_Rotation is shared)."""

    def __init__(self) -> None:
        super().__init__()
        inner = nn.Linear(2, 2)
        self.a = nn.Sequential(inner, nn.Tanh())
        self.b = nn.Sequential(inner)
        self.c = nn.Linear(2, 2)
        self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.c(self.b(self.a(x)))


def test_module_view_shares_parameters_and_leaves_the_original_alone():
    model = Shared()
    store: dict = {}
    view = module_view(model, {"c": FeatureTap(model.c, store, "c", record="input")}, scale=2.0)
    x = torch.randn(3, 2)
    torch.testing.assert_close(view(x), 2.0 * model(x))
    torch.testing.assert_close(store["c"], model.b(model.a(x)))
    assert view.c.inner is model.c and model.scale == 1.0 and isinstance(model.c, nn.Linear)
    assert view.a[0].weight is model.a[0].weight


def test_tree_view_replaces_shared_modules_once_and_copies_only_their_parents():
    model = Shared()
    inner = model.a[0]
    store: dict = {}

    def edit(module: nn.Module, view: nn.Module) -> nn.Module | None:
        return FeatureTap(view, store, id(module)) if module is inner else None

    view = tree_view(model, edit)
    assert view.a[0] is view.b[0]  # one replacement, shared like the original
    assert isinstance(view.a[0], FeatureTap) and view.a[0].inner.weight is inner.weight
    assert view.c is model.c  # untouched branches stay the original objects
    assert view.a is not model.a and isinstance(model.a[0], nn.Linear)
    x = torch.randn(3, 2)
    torch.testing.assert_close(view(x), model(x))
    assert id(inner) in store
    assert tree_view(model, lambda module, view: None) is model


def test_feature_tap_records_keyword_inputs_and_rejects_unknown_modes():
    store: dict = {}

    class Keywords(nn.Module):
        def forward(self, node_feats: torch.Tensor, sc: torch.Tensor) -> torch.Tensor:
            return node_feats + sc

    tap = FeatureTap(Keywords(), store, record="input")
    x = torch.ones(2)
    tap(node_feats=x, sc=x)
    assert store["features"] is x
    with pytest.raises(ValueError, match="record"):
        FeatureTap(Keywords(), store, record="gradient")  # type: ignore[arg-type]


@pytest.mark.parametrize("lmin", [0, 1])
def test_l_major_to_e3nn_is_the_documented_transpose(lmin):
    n, channels, lmax = 3, 4, 2
    emb = torch.randn(n, (lmax + 1) ** 2 - lmin**2 + 7, channels)  # extra rows are dropped
    out = l_major_to_e3nn(emb, lmax, lmin)
    irreps = natural_irreps(channels, lmax, lmin)
    assert out.shape == (n, irreps.dim)
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        block = out[:, sl].reshape(n, mul, ir.dim)  # e3nn: channel-major within an irrep
        for c in range(mul):
            for m in range(ir.dim):
                assert torch.equal(block[:, c, m], emb[:, ir.l**2 - lmin**2 + m, c])
    assert str(natural_irreps(8, 2)) == "8x0e+8x1o+8x2e"


def test_default_dtype_and_seeded_restore_global_state_even_on_error():
    before_dtype, before_rng = torch.get_default_dtype(), torch.get_rng_state()
    with pytest.raises(RuntimeError), seeded(3), default_dtype(torch.float64):
        assert torch.get_default_dtype() == torch.float64
        first = torch.rand(2)
        raise RuntimeError
    assert torch.get_default_dtype() == before_dtype
    assert torch.equal(torch.get_rng_state(), before_rng)
    with seeded(3):
        assert torch.equal(torch.rand(2, dtype=torch.float64), first)


def test_neighbor_edges_periodic_images_and_self_loops():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    batch = torch.zeros(2, dtype=torch.long)
    edges, shifts = neighbor_edges(pos, batch, 1.5)
    assert edges.tolist() == [[0, 1], [1, 0]] and not shifts.any()
    edges, _ = neighbor_edges(pos, batch, 1.5, self_interaction=True)
    assert edges.tolist() == [[0, 0, 1, 1], [0, 1, 0, 1]]
    cell = torch.eye(3, dtype=torch.float64).unsqueeze(0) * 2.0
    pbc = torch.tensor([[True, False, False]])
    edges, shifts = neighbor_edges(pos, batch, 1.5, cell, pbc)
    vec = pos[edges[1]] - pos[edges[0]] + shifts.to(pos.dtype) @ cell[0]
    assert edges.shape[1] == 4 and bool((vec.norm(dim=-1) < 1.5).all())  # 0-1, 1-0 and images


def test_gradient_energy_forces_is_minus_the_gradient():
    pos = torch.randn(4, 3, dtype=torch.float64)
    energy, forces = gradient_energy_forces(lambda p: (p**2).sum().reshape(1), pos)
    torch.testing.assert_close(forces, -2 * pos)
    assert not energy.requires_grad and not pos.requires_grad
