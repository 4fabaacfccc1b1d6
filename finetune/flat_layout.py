"""The flat batch layout of Hessians shared by the losses and metrics (pure torch).

A batch of B structures with N_g atoms holds its Hessians as one 1-D tensor of length
Σ_g (3N_g)², each structure's (3N_g, 3N_g) matrix (index ``3a + α``, eV/Å²) row-major,
concatenated (:mod:`hip_head.assemble`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hip_head.errors import InvalidArgumentError

CountsLike = Sequence[int] | torch.Tensor | np.ndarray


def _counts_tensor(atoms_per_graph: CountsLike, device: torch.device) -> torch.Tensor:
    if isinstance(atoms_per_graph, torch.Tensor):
        return atoms_per_graph.reshape(-1).to(device=device, dtype=torch.long)
    return torch.as_tensor(np.asarray(atoms_per_graph).reshape(-1), dtype=torch.long, device=device)


def _flat_segments(counts: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment id [total], block size [B]) of the flat layout; checks the length."""
    sizes = (3 * counts) ** 2
    expected = int(sizes.sum())
    if total != expected:
        raise InvalidArgumentError(
            f"flat Hessian has {total} entries but structures of {counts.tolist()} atoms need "
            f"sum (3N)^2 = {expected}"
        )
    seg = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), sizes)
    return seg, sizes


def _elementwise(diff: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mae":
        return diff.abs()
    if kind == "mse":
        return diff.square()
    raise InvalidArgumentError(f"loss kind must be 'mae' or 'mse', got {kind!r}")


def _padded_index(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(g, i, j) [Σ (3N_g)²] of each flat entry in a [B, 3Nmax, 3Nmax] padded batch, and 3Nmax."""
    n3 = 3 * counts
    seg = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), n3**2)
    starts = torch.cumsum(n3**2, 0) - n3**2
    local = torch.arange(seg.numel(), device=counts.device) - starts[seg]
    rows = torch.div(local, n3[seg], rounding_mode="floor")
    cols = local - rows * n3[seg]
    return seg, rows, cols, int(n3.max()) if n3.numel() else 0


def _pad_flat(flat: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[Σ (3N_g)²] flat -> [B, 3Nmax, 3Nmax] zero-padded (differentiable)."""
    seg, rows, cols, m = _padded_index(counts)
    out = flat.new_zeros(counts.numel(), m, m)
    return out.index_put((seg, rows, cols), flat.reshape(-1))


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)
