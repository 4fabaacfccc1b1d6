"""Reference Hessians: exact second derivatives by autograd, and finite differences of forces.

These are the baselines a HIP head is compared with (and trained against when no labels exist):

* :func:`autograd_hessian` differentiates the forces of any differentiable energy once more,
  batching the rows of the Jacobian as vectorised vector-Jacobian products (``vmap`` over VJPs,
  ``torch.autograd.grad(..., is_grads_batched=True)``). Structures in a batch are independent, so
  one VJP seed selects the same local row in every structure at once: a batch costs
  ``3 * max_g N_g`` VJPs, not ``3 * sum_g N_g``.
* :func:`autograd_hessian_rows` returns only selected rows (random row sampling for training).
* :func:`finite_difference_hessian` takes central differences of forces (6N force calls).

Layouts follow the package conventions: Hessians in eV/Å², dense index ``3a + α`` (atom-major,
xyz inner), and for batches the *flat* layout: each structure's row-major ``(3N_g, 3N_g)`` block,
concatenated over structures (length ``sum_g (3 N_g)**2``), see :func:`split_flat`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from hip_head.assemble import _counts, flat_hessian_size, split_flat
from hip_head.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_SEED_ATOM_BUDGET",
    "autograd_hessian",
    "autograd_hessian_rows",
    "finite_difference_hessian",
    "flat_hessian_rows",
]

#: Energy function: positions [N, 3] (Å) -> energies [B] (eV), one per structure.
EnergyFn = Callable[[torch.Tensor], torch.Tensor]
#: Forces function: positions [N, 3] (Å) -> forces [N, 3] (eV/Å).
ForcesFn = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]

#: Default memory bound of one batched VJP: seeds per VJP times atoms in the batch. The backward
#: pass of one seed costs memory roughly proportional to the number of atoms, so the default
#: ``chunk_size`` is ``max(1, DEFAULT_SEED_ATOM_BUDGET // N)`` (capped by the number of rows).
# Measured on CPU (random 64-channel MACE, 20 atoms, float32): chunks of 6-16 seeds took 2.7 s,
# 60 seeds 8.2 s and all 60 rows in one VJP 10 s, i.e. large vmapped chunks are memory-bound.
DEFAULT_SEED_ATOM_BUDGET: int = 320

_vmap_fallback_warned = False


# ---------------------------------------------------------------------------------- flat layout
def flat_hessian_rows(
    flat: torch.Tensor,
    atoms_per_graph: Sequence[int] | torch.Tensor | np.ndarray,
    rows: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
) -> torch.Tensor:
    """Gather rows of a flat batch Hessian in the layout of :func:`autograd_hessian_rows`.

    Use it on label Hessians so a row-sampled loss compares like with like.

    Args:
        flat: [sum_g (3 N_g)**2] Hessian in the flat layout, eV/Å².
        atoms_per_graph: [B] atom count N_g of each structure.
        rows: local row indices ``3a + α`` (``a`` counted within its structure): [K] (the same
            rows in every structure) or [B, K] (one set per structure).

    Returns:
        [K, 3N] with ``N = sum_g N_g``: entry ``[k, 3a + β]`` for global atom ``a`` of structure
        ``g`` is ``H_g[rows[g, k], 3 (a - ptr[g]) + β]``, eV/Å².
    """
    counts = _counts(atoms_per_graph)
    blocks = split_flat(flat, counts)
    rows_t = _rows_per_graph(rows, counts, device=flat.device)
    return torch.cat([h[r] for h, r in zip(blocks, rows_t, strict=True)], dim=1)


# ---------------------------------------------------------------------------------- autograd
def _ptr_list(ptr: torch.Tensor | Sequence[int] | None, num_atoms: int) -> list[int]:
    if ptr is None:
        return [0, num_atoms]
    values = [int(p) for p in (ptr.tolist() if isinstance(ptr, torch.Tensor) else ptr)]
    if len(values) < 2 or values[0] != 0 or values[-1] != num_atoms:
        raise InvalidArgumentError(
            f"ptr must start at 0 and end at the number of atoms ({num_atoms}); got {values}"
        )
    if any(b < a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise InvalidArgumentError(f"ptr must be non-decreasing; got {values}")
    return values


def _forces_graph(
    energy_fn: EnergyFn, positions: torch.Tensor, num_graphs: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (x, g) with g = d(sum E)/dx [N, 3] carrying a graph, or None if E is linear in x."""
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise InvalidArgumentError(
            f"positions must have shape [N, 3]; got {tuple(positions.shape)}"
        )
    if not positions.is_floating_point():
        raise TypeError(f"positions must be a floating tensor; got {positions.dtype}")
    x = positions if positions.requires_grad else positions.detach().requires_grad_(True)
    energy = energy_fn(x)
    if not isinstance(energy, torch.Tensor):
        raise TypeError(f"energy_fn must return a torch.Tensor; got {type(energy).__name__}")
    if energy.numel() != num_graphs:
        raise InvalidArgumentError(
            f"energy_fn returned {energy.numel()} energies for {num_graphs} structures (ptr)"
        )
    if not energy.requires_grad:
        return x, None
    (g,) = torch.autograd.grad(energy.sum(), x, create_graph=True, allow_unused=True)
    if g is None or not g.requires_grad:
        return x, None
    return x, g


def _warn_vmap_fallback(err: BaseException) -> None:
    global _vmap_fallback_warned
    if not _vmap_fallback_warned:
        _vmap_fallback_warned = True
        warnings.warn(
            "vectorised (vmap) Hessian rows failed for this model "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "falling back to a loop of single VJPs (slower, same result). "
            "Pass vectorize=False to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )


def _batched_vjp(
    g: torch.Tensor,
    x: torch.Tensor,
    seeds: torch.Tensor,
    create_graph: bool,
    state: dict[str, bool],
) -> torch.Tensor:
    """Rows seeds[k] @ d g / d x, [K, N, 3]; vectorised when state['vectorize'], else a loop."""
    if state["vectorize"]:
        try:
            (rows,) = torch.autograd.grad(
                g,
                x,
                grad_outputs=seeds,
                retain_graph=True,
                create_graph=create_graph,
                allow_unused=True,
                is_grads_batched=True,
            )
            return torch.zeros_like(seeds) if rows is None else rows
        except (RuntimeError, NotImplementedError) as err:
            _warn_vmap_fallback(err)
            state["vectorize"] = False
    out = []
    for seed in seeds:
        (row,) = torch.autograd.grad(
            g,
            x,
            grad_outputs=seed,
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
        )
        out.append(torch.zeros_like(seed) if row is None else row)
    return torch.stack(out)


def _default_chunk(num_atoms: int, num_rows: int) -> int:
    return max(1, min(num_rows, DEFAULT_SEED_ATOM_BUDGET // max(num_atoms, 1)))


def autograd_hessian(
    energy_fn: EnergyFn,
    positions: torch.Tensor,
    ptr: torch.Tensor | Sequence[int] | None = None,
    chunk_size: int | None = None,
    create_graph: bool = False,
    vectorize: bool = True,
) -> torch.Tensor:
    """Exact Hessian of a batch of structures by double backpropagation.

    First the forces graph ``g = d(sum_g E_g)/dx`` is built with ``create_graph=True``; then the
    rows of ``dg/dx`` come from vector-Jacobian products batched with
    ``torch.autograd.grad(..., is_grads_batched=True)``. Seed ``r`` selects local row
    ``r = 3a + α`` in *every* structure at once (structures are independent), so the batch needs
    ``3 * max_g N_g`` VJPs, processed ``chunk_size`` at a time. If the vectorised VJP fails for
    the model (an op without a batching rule), a loop of plain VJPs is used instead, with a
    one-time ``RuntimeWarning``. The result is not symmetrised (it is symmetric to rounding).

    ``energy_fn`` must not couple structures (e.g. by normalising with batch statistics): the
    cross-structure derivatives are assumed to vanish and would be summed into the blocks.

    Args:
        energy_fn: positions [N, 3] (Å) -> energies [B] (eV), one per structure (a 0-d or [1]
            tensor when ``ptr`` is None). Must be twice differentiable in positions.
        positions: [N, 3] Cartesian positions, Å, float32 or float64. If it already requires
            grad it is used as is (so the result can be differentiated with respect to it).
        ptr: [B + 1] offsets; atoms of structure ``g`` are ``ptr[g]:ptr[g+1]``. None: one
            structure.
        chunk_size: rows (VJP seeds) per batched VJP. Default
            ``max(1, DEFAULT_SEED_ATOM_BUDGET // N)``, capped at ``3 * max_g N_g``; lower it
            if memory runs out.
        create_graph: keep the result differentiable (with respect to model parameters and
            positions), e.g. to train against it.
        vectorize: try the vectorised (vmap) VJPs first; False forces the loop.

    Returns:
        [sum_g (3 N_g)**2] Hessian in eV/Å², the flat batch layout: each structure's row-major
        (3N_g, 3N_g) block (index ``3a + α`` within the structure), concatenated in order. For
        one structure, ``.view(3N, 3N)`` gives the dense matrix; see :func:`split_flat`.

    Raises:
        ValueError: positions not [N, 3], a bad ``ptr`` or an energy count that does not match.
    """
    n_atoms = positions.shape[0] if positions.dim() == 2 else -1
    ptr_l = _ptr_list(ptr, n_atoms)
    counts = [b - a for a, b in zip(ptr_l[:-1], ptr_l[1:], strict=True)]
    num_rows = 3 * max(counts) if counts else 0
    chunk = _default_chunk(n_atoms, num_rows) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise InvalidArgumentError(f"chunk_size must be at least 1; got {chunk_size}")
    dtype, device = positions.dtype, positions.device

    with torch.enable_grad():
        x, g = _forces_graph(energy_fn, positions, len(counts))
        if g is None:  # energy at most linear in positions: the Hessian vanishes
            return torch.zeros(flat_hessian_size(counts), dtype=dtype, device=device)
        starts = torch.tensor(ptr_l[:-1], dtype=torch.long, device=device)
        counts_t = torch.tensor(counts, dtype=torch.long, device=device)
        pieces: list[list[torch.Tensor]] = [[] for _ in counts]
        state = {"vectorize": vectorize}
        for r0 in range(0, num_rows, chunk):
            r1 = min(r0 + chunk, num_rows)
            seeds = torch.zeros(r1 - r0, n_atoms, 3, dtype=dtype, device=device)
            for k, r in enumerate(range(r0, r1)):
                atom, alpha = divmod(r, 3)
                seeds[k, starts[counts_t > atom] + atom, alpha] = 1.0
            rows = _batched_vjp(g, x, seeds, create_graph, state)  # [K, N, 3]
            for i, (start, n) in enumerate(zip(ptr_l[:-1], counts, strict=True)):
                stop = min(r1, 3 * n)
                if stop > r0:
                    block = rows[: stop - r0, start : start + n, :]
                    pieces[i].append(block.reshape(stop - r0, 3 * n))
        flat = [
            torch.cat(p).reshape(-1) if p else torch.zeros(0, dtype=dtype, device=device)
            for p in pieces
        ]
        return torch.cat(flat)


def _rows_per_graph(
    rows: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    counts: list[int],
    device: torch.device,
) -> torch.Tensor:
    """Validate local row indices and return them as [B, K] int64."""
    rows_t = torch.as_tensor(rows, dtype=torch.long, device=device)
    if rows_t.dim() == 1:
        rows_t = rows_t.unsqueeze(0).expand(len(counts), -1)
    if rows_t.dim() != 2 or rows_t.shape[0] != len(counts):
        raise InvalidArgumentError(
            f"rows must be [K] or [B, K] with B = {len(counts)} structures; "
            f"got shape {tuple(rows_t.shape)}"
        )
    limits = torch.tensor([3 * n for n in counts], dtype=torch.long, device=device)
    bad = (rows_t < 0) | (rows_t >= limits[:, None])
    if bad.any():
        g, k = (int(v) for v in torch.nonzero(bad)[0])
        raise InvalidArgumentError(
            f"row {int(rows_t[g, k])} is out of range for structure {g} with "
            f"{counts[g]} atoms (rows are local indices 3a + α < {3 * counts[g]})"
        )
    return rows_t


def autograd_hessian_rows(
    energy_fn: EnergyFn,
    positions: torch.Tensor,
    rows: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    ptr: torch.Tensor | Sequence[int] | None = None,
    create_graph: bool = True,
    chunk_size: int | None = None,
    vectorize: bool = True,
) -> torch.Tensor:
    """Selected rows of the exact Hessian (HORM-style random row sampling for training).

    Seed ``k`` selects row ``rows[g, k]`` of every structure ``g`` at once, so the cost is K
    VJPs whatever the batch size. Same method, fallback and caveats as
    :func:`autograd_hessian`.

    Args:
        energy_fn: positions [N, 3] (Å) -> energies [B] (eV).
        positions: [N, 3] Cartesian positions, Å.
        rows: local row indices ``3a + α`` (atom ``a`` counted within its structure): [K] (the
            same rows in every structure; each must be < 3 N_g for all g) or [B, K] (one set
            per structure).
        ptr: [B + 1] structure offsets; None for one structure.
        create_graph: keep the result differentiable (default True, for training).
        chunk_size: seeds per batched VJP (default as in :func:`autograd_hessian`).
        vectorize: try the vectorised (vmap) VJPs first; False forces the loop.

    Returns:
        [K, 3N] rows in eV/Å², ``N = sum_g N_g``: entry ``[k, 3a + β]`` for global atom ``a`` of
        structure ``g`` is ``H_g[rows[g, k], 3 (a - ptr[g]) + β]`` (each structure's columns sit
        at its own atoms). :func:`flat_hessian_rows` gathers labels in the same layout.

    Raises:
        ValueError: a row out of range, or the errors of :func:`autograd_hessian`.
    """
    n_atoms = positions.shape[0] if positions.dim() == 2 else -1
    ptr_l = _ptr_list(ptr, n_atoms)
    counts = [b - a for a, b in zip(ptr_l[:-1], ptr_l[1:], strict=True)]
    dtype, device = positions.dtype, positions.device
    rows_t = _rows_per_graph(rows, counts, device)
    num_seeds = rows_t.shape[1]
    chunk = _default_chunk(n_atoms, num_seeds) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise InvalidArgumentError(f"chunk_size must be at least 1; got {chunk_size}")
    if num_seeds == 0:
        return torch.zeros(0, 3 * n_atoms, dtype=dtype, device=device)

    with torch.enable_grad():
        x, g = _forces_graph(energy_fn, positions, len(counts))
        if g is None:
            return torch.zeros(num_seeds, 3 * n_atoms, dtype=dtype, device=device)
        starts = torch.tensor(ptr_l[:-1], dtype=torch.long, device=device)
        columns = 3 * starts[:, None] + rows_t  # [B, K] global flat index of each seed's 1
        state = {"vectorize": vectorize}
        out = []
        for k0 in range(0, num_seeds, chunk):
            k1 = min(k0 + chunk, num_seeds)
            seeds = torch.zeros(k1 - k0, 3 * n_atoms, dtype=dtype, device=device)
            which = torch.arange(k1 - k0, device=device)[None, :].expand(len(counts), -1)
            seeds[which, columns[:, k0:k1]] = 1.0
            rows_k = _batched_vjp(g, x, seeds.view(k1 - k0, n_atoms, 3), create_graph, state)
            out.append(rows_k.reshape(k1 - k0, 3 * n_atoms))
        return torch.cat(out)


# ---------------------------------------------------------------------------------- finite diff.
def finite_difference_hessian(
    forces_fn: ForcesFn,
    positions: torch.Tensor | np.ndarray,
    step: float = 1e-3,
    symmetrize: bool = False,
) -> torch.Tensor | np.ndarray:
    """Hessian of one structure by central differences of forces.

    Column ``3a + α`` is ``-(F(x + h e_{aα}) - F(x - h e_{aα})) / (2h)``: 6N force calls in a
    loop. The truncation error is O(h²); use float64 forces, since rounding is amplified by 1/h.
    The result is not symmetrised unless asked (its asymmetry is a useful error estimate).

    Args:
        forces_fn: positions [N, 3] (Å) -> forces [N, 3] (eV/Å), called with the same type
            (torch tensor or numpy array) as ``positions``. It may use autograd internally.
        positions: [N, 3] Cartesian positions, Å.
        step: displacement h, Å.
        symmetrize: return ``(H + Hᵀ) / 2``.

    Returns:
        (3N, 3N) Hessian in eV/Å², index ``3a + α``; a torch tensor (positions' dtype and
        device, detached) or a numpy float64 array, following the type of ``positions``.

    Raises:
        ValueError: positions not [N, 3], or a non-positive step.
    """
    if step <= 0:
        raise InvalidArgumentError(f"step must be positive; got {step}")
    is_torch = isinstance(positions, torch.Tensor)
    if is_torch:
        x0 = positions.detach().clone()
    else:
        x0 = np.array(positions, dtype=np.float64)
    if x0.ndim != 2 or x0.shape[1] != 3:
        raise InvalidArgumentError(f"positions must have shape [N, 3]; got {tuple(x0.shape)}")
    n3 = 3 * x0.shape[0]

    def forces_at(j: int, sign: float):
        x = x0.clone() if is_torch else x0.copy()
        x.reshape(-1)[j] += sign * step
        f = forces_fn(x)
        if is_torch:
            f = torch.as_tensor(f).detach().to(dtype=x0.dtype, device=x0.device)
        else:
            f = np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f, np.float64)
        return f.reshape(-1)

    columns = [-(forces_at(j, 1.0) - forces_at(j, -1.0)) / (2.0 * step) for j in range(n3)]
    hessian = torch.stack(columns, dim=1) if is_torch else np.stack(columns, axis=1)
    if symmetrize:
        hessian = 0.5 * (hessian + hessian.T)
    return hessian
