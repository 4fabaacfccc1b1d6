"""Reference Hessians (hip_head.autograd) on analytic toy potentials: no backbone needed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hip_head.autograd as hg
from hip_head.assemble import flat_hessian_size, split_flat
from hip_head.autograd import (
    autograd_hessian,
    autograd_hessian_rows,
    finite_difference_hessian,
    flat_hessian_rows,
)

SIZES = [2, 5, 3]


# ---------------------------------------------------------------------------------- toy potential
def _pairs(ptr: list[int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    i_all, j_all = [], []
    for start, stop in zip(ptr[:-1], ptr[1:], strict=True):
        i, j = torch.triu_indices(stop - start, stop - start, offset=1, device=device)
        i_all.append(i + start)
        j_all.append(j + start)
    return torch.cat(i_all), torch.cat(j_all)


def toy_energy(positions: torch.Tensor, ptr: list[int], depth=1.3) -> torch.Tensor:
    """Morse pairs plus an EAM-like many-body term; energies [B] eV."""
    counts = [b - a for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    i, j = _pairs(ptr)
    r = (positions[i] - positions[j]).norm(dim=-1)
    pair = depth * ((1 - torch.exp(-1.7 * (r - 1.2))) ** 2 - 1)
    rho = torch.zeros(positions.shape[0], dtype=positions.dtype)
    w = torch.exp(-(r**2))
    rho = rho.index_add(0, i, w).index_add(0, j, w)
    many = depth * 0.3 * torch.sqrt(rho + 1.0)
    energy = torch.zeros(len(counts), dtype=positions.dtype)
    return energy.index_add(0, batch[i], pair).index_add(0, batch, many)


def molecule(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """A non-overlapping cluster of n atoms (about 1.3 Å spacing, jittered)."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = 1.3 * grid[torch.randperm(27, generator=gen)[:n]].to(torch.float64)
    return (pos + 0.15 * torch.randn(n, 3, generator=gen, dtype=torch.float64)).to(dtype)


def batch(sizes=SIZES, dtype=torch.float64) -> tuple[torch.Tensor, list[int]]:
    pos = torch.cat([molecule(n, seed=k, dtype=dtype) for k, n in enumerate(sizes)])
    return pos, [0, *np.cumsum(sizes).tolist()]


def reference(pos: torch.Tensor, n: int) -> torch.Tensor:
    """torch.autograd.functional.hessian of one molecule, (3N, 3N)."""

    def e(x):
        return toy_energy(x.view(n, 3), [0, n]).sum()

    return torch.autograd.functional.hessian(e, pos.reshape(-1))


# ---------------------------------------------------------------------------------- tests
def test_single_molecule_matches_functional_hessian():
    pos = molecule(6, seed=3)
    flat = autograd_hessian(lambda x: toy_energy(x, [0, 6]), pos)
    assert flat.shape == (18 * 18,)
    torch.testing.assert_close(flat.view(18, 18), reference(pos, 6), rtol=1e-10, atol=1e-10)


def test_batch_equals_per_molecule():
    pos, ptr = batch()
    flat = autograd_hessian(lambda x: toy_energy(x, ptr), pos, ptr=torch.tensor(ptr))
    assert flat.shape == (flat_hessian_size(SIZES),)
    blocks = split_flat(flat, SIZES)
    for g, n in enumerate(SIZES):
        sub = pos[ptr[g] : ptr[g + 1]]
        single = autograd_hessian(lambda x, n=n: toy_energy(x, [0, n]), sub).view(3 * n, 3 * n)
        torch.testing.assert_close(blocks[g], single, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(blocks[g], reference(sub, n), rtol=1e-10, atol=1e-10)


def test_vmap_equals_loop_and_chunk_sizes_agree():
    pos, ptr = batch()
    fn = lambda x: toy_energy(x, ptr)  # noqa: E731
    ref = autograd_hessian(fn, pos, ptr, vectorize=False)
    for chunk in (1, 4, 1000, None):
        out = autograd_hessian(fn, pos, ptr, chunk_size=chunk)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    out = autograd_hessian(fn, pos, ptr, chunk_size=2, vectorize=False)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


class _NoVmapSquare(torch.autograd.Function):
    """x**2 whose second derivative leaves torch (a batching rule cannot exist)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _NoVmapTwice.apply(x) * grad


class _NoVmapTwice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return torch.tensor(grad.tolist(), dtype=grad.dtype) * 2


def test_vmap_failure_falls_back_to_loop_with_one_warning(monkeypatch):
    monkeypatch.setattr(hg, "_vmap_fallback_warned", False)
    pos, ptr = batch()

    owner = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))

    def fn(x):
        extra = torch.zeros(len(SIZES), dtype=x.dtype).index_add(
            0, owner, _NoVmapSquare.apply(x).sum(dim=1)
        )
        return toy_energy(x, ptr) + 0.1 * extra

    expected = autograd_hessian(lambda x: toy_energy(x, ptr), pos, ptr)
    # the extra term 0.1 * sum x**2 adds 0.2 on the diagonal
    expected = expected + torch.cat(
        [0.2 * torch.eye(3 * n, dtype=torch.float64).reshape(-1) for n in SIZES]
    ).to(expected)
    with pytest.warns(RuntimeWarning, match="falling back"):
        out = autograd_hessian(fn, pos, ptr, chunk_size=4)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        again = autograd_hessian(fn, pos, ptr)  # warned once per process only
    torch.testing.assert_close(again, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    pos, ptr = batch(dtype=dtype)
    out = autograd_hessian(lambda x: toy_energy(x, ptr), pos, ptr)
    assert out.dtype == dtype
    ref = autograd_hessian(lambda x: toy_energy(x, ptr), pos.double(), ptr)
    scale = ref.abs().max()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (out.double() - ref).abs().max() <= tol * scale


def test_create_graph_differentiable_in_parameters():
    pos, ptr = batch()
    depth = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    flat = autograd_hessian(lambda x: toy_energy(x, ptr, depth), pos, ptr, create_graph=True)
    assert flat.requires_grad
    (grad,) = torch.autograd.grad(flat.sum(), depth)
    # the energy is linear in the depth, so is the Hessian
    torch.testing.assert_close(grad, flat.detach().sum() / 1.3, rtol=1e-10, atol=1e-12)
    plain = autograd_hessian(lambda x: toy_energy(x, ptr, depth), pos, ptr)
    assert not plain.requires_grad


def test_differentiable_in_positions_when_they_require_grad():
    pos = molecule(3, seed=1).requires_grad_(True)
    flat = autograd_hessian(lambda x: toy_energy(x, [0, 3]), pos, create_graph=True)
    (g,) = torch.autograd.grad(flat.sum(), pos)
    assert g.shape == (3, 3) and torch.isfinite(g).all()


def test_works_under_no_grad_and_for_linear_energies():
    pos, ptr = batch()
    with torch.no_grad():
        out = autograd_hessian(lambda x: toy_energy(x, ptr), pos, ptr)
    torch.testing.assert_close(out, autograd_hessian(lambda x: toy_energy(x, ptr), pos, ptr))
    linear = autograd_hessian(lambda x: (x * 2.0).sum().reshape(1), pos)
    assert linear.shape == (flat_hessian_size([pos.shape[0]]),) and not linear.any()


def test_finite_differences_match_autograd():
    pos = molecule(5, seed=7)

    def forces(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(toy_energy(x, [0, 5]).sum(), x)
        return -g

    exact = autograd_hessian(lambda x: toy_energy(x, [0, 5]), pos).view(15, 15)
    fd = finite_difference_hessian(forces, pos, step=1e-3)
    assert fd.shape == (15, 15) and fd.dtype == torch.float64
    scale = exact.abs().max()
    assert (fd - exact).abs().max() <= 1e-5 * scale
    fd_sym = finite_difference_hessian(forces, pos, step=1e-3, symmetrize=True)
    torch.testing.assert_close(fd_sym, fd_sym.T)
    # numpy in, numpy out
    fd_np = finite_difference_hessian(
        lambda x: forces(torch.from_numpy(x)).numpy(), pos.numpy(), step=1e-3
    )
    assert isinstance(fd_np, np.ndarray)
    np.testing.assert_allclose(fd_np, fd.numpy(), rtol=1e-12, atol=1e-12)


def test_rows_match_dense_rows():
    pos, ptr = batch()
    fn = lambda x: toy_energy(x, ptr)  # noqa: E731
    flat = autograd_hessian(fn, pos, ptr)
    blocks = split_flat(flat, SIZES)
    # the same local rows in every structure
    rows = [0, 5, 4]
    out = autograd_hessian_rows(fn, pos, rows, ptr)
    assert out.shape == (3, 3 * sum(SIZES))
    for g in range(len(SIZES)):
        cols = slice(3 * ptr[g], 3 * ptr[g + 1])
        torch.testing.assert_close(out[:, cols], blocks[g][rows], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, flat_hessian_rows(flat, SIZES, rows))
    # one set per structure, chunked, looped
    per = torch.tensor([[1, 2], [14, 0], [8, 3]])
    out2 = autograd_hessian_rows(fn, pos, per, ptr, chunk_size=1, vectorize=False)
    torch.testing.assert_close(out2, flat_hessian_rows(flat, SIZES, per), rtol=1e-12, atol=1e-12)


def test_rows_create_graph_default():
    pos = molecule(4, seed=2)
    depth = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    out = autograd_hessian_rows(lambda x: toy_energy(x, [0, 4], depth), pos, [0, 7])
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), depth)
    torch.testing.assert_close(grad, out.detach().sum() / 1.3)


def test_errors():
    pos, ptr = batch()
    fn = lambda x: toy_energy(x, ptr)  # noqa: E731
    with pytest.raises(ValueError, match="ptr"):
        autograd_hessian(fn, pos, [0, 3, 7])
    with pytest.raises(ValueError, match="energies"):
        autograd_hessian(fn, pos)  # 3 energies for 1 structure
    with pytest.raises(ValueError, match="out of range"):
        autograd_hessian_rows(fn, pos, [6], ptr)  # structure 0 has 2 atoms
    with pytest.raises(ValueError, match="chunk_size"):
        autograd_hessian(fn, pos, ptr, chunk_size=0)
    with pytest.raises(ValueError, match="flat Hessian"):
        split_flat(torch.zeros(10), [1])


def test_flat_helpers():
    assert flat_hessian_size([2, 5, 3]) == 36 + 225 + 81
    assert flat_hessian_size(torch.tensor([1])) == 9
    flat = torch.arange(36 + 9, dtype=torch.float64)
    a, b = split_flat(flat, np.array([2, 1]))
    assert a.shape == (6, 6) and b.shape == (3, 3) and b[0, 0] == 36


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_symmetric_and_translation_sum_rule(n, seed):
    pos = molecule(n, seed=seed)
    h = autograd_hessian(lambda x: toy_energy(x, [0, n]), pos).view(3 * n, 3 * n)
    scale = max(float(h.abs().max()), 1.0)
    assert (h - h.T).abs().max() <= 1e-12 * scale
    # translation invariance: sum over atoms b of H[a alpha, b beta] vanishes
    assert h.view(3 * n, n, 3).sum(dim=1).abs().max() <= 1e-11 * scale
