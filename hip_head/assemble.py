"""Assemble Hessian blocks into dense, flat or block-sparse Hessians, and convert layouts.

Layouts (all eV/Å² unless converted):

- **dense**: one (3N, 3N) matrix per structure, index 3a + α (atom-major, xyz inner): the HORM
  label layout and the one ASE's ``VibrationsData.from_2d`` takes.
- **flat**: one 1-D tensor of length Σ_g (3N_g)² for a batch: each structure's dense matrix,
  row-major, concatenated. Batches molecules of different sizes without padding.
- **block-sparse**: :class:`BlockSparseHessian`, the non-zero 3x3 blocks and their (a, b)
  indices. Memory grows with the number of pairs within the cutoff, not with N².
- (N, 3, N, 3): ASE ``VibrationsData`` 4-index form. (3N, N, 3): MACE's ``compute_hessian``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hip_head.blocks import HessianBlocks
from hip_head.errors import DenseHessianTooLargeError, InvalidArgumentError
from hip_head.graph import AtomicGraph
from hip_head.memory import available_memory_bytes

#: Fraction of the available memory a dense Hessian may take before we refuse to allocate it.
DENSE_MEMORY_FRACTION = 0.5


def _counts(atoms_per_graph: Sequence[int] | torch.Tensor | np.ndarray) -> list[int]:
    if isinstance(atoms_per_graph, torch.Tensor):
        return [int(n) for n in atoms_per_graph.reshape(-1).tolist()]
    return [int(n) for n in np.asarray(atoms_per_graph).reshape(-1).tolist()]


def flat_hessian_size(atoms_per_graph: Sequence[int] | torch.Tensor | np.ndarray) -> int:
    """Length of the flat batch Hessian layout.

    Args:
        atoms_per_graph: [B] atom count N_g of each structure.

    Returns:
        ``sum_g (3 N_g)**2``.
    """
    return sum((3 * n) ** 2 for n in _counts(atoms_per_graph))


def split_flat(
    flat: torch.Tensor, atoms_per_graph: Sequence[int] | torch.Tensor | np.ndarray
) -> list[torch.Tensor]:
    """Split a flat batch Hessian into one dense matrix per structure.

    Args:
        flat: [sum_g (3 N_g)**2] Hessian in the flat layout, eV/Å².
        atoms_per_graph: [B] atom count N_g of each structure.

    Returns:
        B tensors of shape (3N_g, 3N_g), eV/Å², index ``3a + α`` within the structure (views of
        ``flat`` where possible).

    Raises:
        ValueError: ``flat`` has the wrong length for ``atoms_per_graph``.
    """
    counts = _counts(atoms_per_graph)
    flat = flat.reshape(-1)
    expected = flat_hessian_size(counts)
    if flat.numel() != expected:
        raise InvalidArgumentError(
            f"flat Hessian has {flat.numel()} entries but structures of {counts} atoms need "
            f"sum (3N)^2 = {expected}"
        )
    out, offset = [], 0
    for n in counts:
        size = (3 * n) ** 2
        out.append(flat[offset : offset + size].view(3 * n, 3 * n))
        offset += size
    return out


def flat_offsets(atoms_per_graph: torch.Tensor) -> torch.Tensor:
    """[B + 1] start of each structure's block in the flat layout (cumulative (3N_g)²)."""
    sizes = (3 * atoms_per_graph) ** 2
    return torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])


def check_dense_fits(num_entries: int, dtype: torch.dtype, device: torch.device) -> None:
    """Raise :class:`DenseHessianTooLargeError` when ``num_entries`` would not fit in memory.

    Args:
        num_entries: number of Hessian entries to allocate.
        dtype: their dtype.
        device: where they would live.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    needed = num_entries * itemsize
    available = available_memory_bytes(device)
    if needed > DENSE_MEMORY_FRACTION * available:
        raise DenseHessianTooLargeError(
            f"a dense Hessian needs {needed / 2**30:.2f} GiB but only {available / 2**30:.2f} GiB "
            f"is available on {device}; ask for the block-sparse output instead "
            "(hessian_output='blocks', a BlockSparseHessian whose memory grows with the number "
            "of atom pairs within the Hessian cutoff)"
        )


def _block_flat_index(
    graph: AtomicGraph, rows: torch.Tensor, cols: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """[K, 3, 3] flat positions of the 9 entries of blocks (rows[k], cols[k])."""
    g = graph.batch[rows]
    n3 = 3 * graph.atoms_per_graph[g]  # [K]
    la = rows - graph.ptr[g]
    lb = cols - graph.ptr[g]
    xyz = torch.arange(3, device=rows.device)
    r = 3 * la[:, None, None] + xyz[None, :, None]  # [K, 3, 1]
    c = 3 * lb[:, None, None] + xyz[None, None, :]  # [K, 1, 3]
    return offsets[g][:, None, None] + r * n3[:, None, None] + c


def blocks_to_flat(blocks: HessianBlocks, graph: AtomicGraph, check_memory: bool = True):
    """Scatter blocks into the flat batch layout.

    The flat tensor is allocated once, zero-filled, and the blocks are written into it in
    place; nothing else of size (3N)² is made. For one structure the blocks go straight into
    its (N, 3, N, 3) view (no index tensor per entry: extra memory O(N + P)); for a batch each
    entry's flat position is computed ([K, 3, 3] int64 indices, K = N + P blocks).

    Args:
        blocks: head output (diagonal [N, 3, 3], off-diagonal [P, 3, 3]).
        graph: the batch the blocks belong to.
        check_memory: refuse (with a clear error) to allocate more than fits in memory.

    Returns:
        [Σ_g (3N_g)²] flat Hessian, eV/Å², differentiable w.r.t. the blocks.
    """
    total = flat_hessian_size(graph.atoms_per_graph)
    values = blocks.diagonal
    if check_memory:
        check_dense_fits(total, values.dtype, values.device)
    diagonal, pair_index, offdiagonal = fold_images(blocks)
    flat = values.new_zeros(total)
    atoms = torch.arange(graph.num_atoms, device=values.device)
    if graph.num_graphs == 1:
        dense = flat.view(graph.num_atoms, 3, graph.num_atoms, 3)  # H[3a + α, 3b + β]
        dense[atoms, :, atoms, :] = diagonal
        if pair_index.shape[1]:
            dense[pair_index[0], :, pair_index[1], :] = offdiagonal
        return flat
    offsets = flat_offsets(graph.atoms_per_graph)
    flat.index_put_(
        (_block_flat_index(graph, atoms, atoms, offsets).reshape(-1),), diagonal.reshape(-1)
    )
    if pair_index.shape[1]:
        a, b = pair_index
        index = _block_flat_index(graph, a, b, offsets).reshape(-1)
        flat.index_put_((index,), offdiagonal.reshape(-1))
    return flat


def fold_images(blocks: HessianBlocks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block per atom pair: the blocks of periodic images summed, exactly symmetric.

    In a periodic cell smaller than twice the cutoff the head predicts one block per image
    pair (a, b, S); the cell's Hessian block is H_ab = Σ_S H_ab,S, and an atom's own images
    add to its diagonal block. Each sum is formed once, for a < b (and for S > 0 among an
    atom's own images), and its transpose gives the mirrored block, so ``H == Hᵀ`` holds
    exactly. Without repeated pairs or self images (molecules, large cells) the blocks come
    back unchanged.

    Args:
        blocks: head output (diagonal [N, 3, 3], off-diagonal [P, 3, 3], pairs with shifts).

    Returns:
        ``(diagonal [N, 3, 3], index [2, Q] (a, b) with a != b, offdiagonal [Q, 3, 3])``,
        eV/Å², with each ordered pair (a, b) at most once; memory O(N + P).
    """
    pairs = blocks.pairs
    a, b = pairs.index
    offdiagonal = blocks.offdiagonal
    shifts = pairs.shifts
    if shifts is None or not pairs.num_pairs or not bool(shifts.any()):
        return blocks.diagonal, pairs.index, offdiagonal
    num_atoms = blocks.diagonal.shape[0]
    key = a * num_atoms + b
    same = a == b
    if not bool(same.any()) and torch.unique(key).numel() == key.numel():
        return blocks.diagonal, pairs.index, offdiagonal
    # An atom's own images come as (a, a, S) and (a, a, -S): add T + Tᵀ with T over S > 0.
    s0, s1, s2 = shifts.unbind(dim=1)
    positive = (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
    half = same & positive
    t = torch.zeros_like(blocks.diagonal).index_add(0, a[half], offdiagonal[half])
    diagonal = blocks.diagonal + (t + t.transpose(-1, -2))
    # Distinct atoms: sum the images of (a, b), a < b; (b, a) gets the transpose.
    upper = a < b
    unique, group = torch.unique(key[upper], return_inverse=True)
    summed = offdiagonal.new_zeros(unique.numel(), 3, 3).index_add(0, group, offdiagonal[upper])
    ua, ub = unique // num_atoms, unique % num_atoms
    index = torch.cat([torch.stack([ua, ub]), torch.stack([ub, ua])], dim=1)
    return diagonal, index, torch.cat([summed, summed.transpose(-1, -2)])


@dataclass
class BlockSparseHessian:
    """A Hessian stored as its non-zero 3x3 blocks, eV/Å².

    Memory grows with K, the number of atom pairs within the Hessian cutoff (plus N diagonal
    blocks); nothing here allocates N². :meth:`from_blocks` stores each atom pair once (the
    periodic images of a pair already summed, see :func:`fold_images`); blocks built by hand
    that share ``(rows[k], cols[k])`` add up.

    Attributes:
        blocks: [K, 3, 3] blocks; block k adds to H[rows[k], cols[k]] (3x3, atom indices
            global).
        rows: [K] int64 atom index a.
        cols: [K] int64 atom index b.
        num_atoms: N, total atoms.
        batch: [N] structure of each atom; blocks never couple two structures.
    """

    blocks: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    num_atoms: int
    batch: torch.Tensor

    @classmethod
    def from_blocks(cls, blocks: HessianBlocks, graph: AtomicGraph) -> BlockSparseHessian:
        """Collect the diagonal and off-diagonal head blocks of ``graph`` (images summed)."""
        diagonal, index, offdiagonal = fold_images(blocks)
        atoms = torch.arange(graph.num_atoms, device=diagonal.device)
        a, b = index
        return cls(
            blocks=torch.cat([diagonal, offdiagonal]),
            rows=torch.cat([atoms, a]),
            cols=torch.cat([atoms, b]),
            num_atoms=graph.num_atoms,
            batch=graph.batch,
        )

    def to_torch_sparse(self) -> torch.Tensor:
        """A (3N, 3N) ``torch.sparse_coo_tensor`` over the whole batch (block-diagonal)."""
        xyz = torch.arange(3, device=self.rows.device)
        r = (3 * self.rows[:, None, None] + xyz[None, :, None]).expand(-1, 3, 3)
        c = (3 * self.cols[:, None, None] + xyz[None, None, :]).expand(-1, 3, 3)
        index = torch.stack([r.reshape(-1), c.reshape(-1)])
        n = 3 * self.num_atoms
        return torch.sparse_coo_tensor(index, self.blocks.reshape(-1), (n, n)).coalesce()

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H @ v without densifying. ``vector`` [N, 3] (or [3N]); returns the same shape."""
        v = vector.reshape(self.num_atoms, 3)
        products = torch.einsum("kij,kj->ki", self.blocks, v[self.cols])
        out = torch.zeros_like(v).index_add(0, self.rows, products)
        return out.reshape(vector.shape)

    def to_dense(self, structure: int = 0) -> torch.Tensor:
        """Dense (3N_g, 3N_g) matrix of one structure (checks it fits in memory first)."""
        atoms = torch.nonzero(self.batch == structure).flatten()
        if atoms.numel() == 0:
            raise IndexError(f"no structure {structure} in this Hessian")
        start, n = int(atoms[0]), int(atoms.numel())
        check_dense_fits((3 * n) ** 2, self.blocks.dtype, self.blocks.device)
        keep = self.batch[self.rows] == structure
        dense = self.blocks.new_zeros(n, n, 3, 3).index_put(
            (self.rows[keep] - start, self.cols[keep] - start), self.blocks[keep], accumulate=True
        )
        return dense.transpose(1, 2).reshape(3 * n, 3 * n)


# ---------------------------------------------------------------------------- layout converters
def dense_to_atom_blocks(hessian: torch.Tensor) -> torch.Tensor:
    """(3N, 3N) -> (N, 3, N, 3), the ASE ``VibrationsData`` form. Works for numpy arrays too."""
    n = hessian.shape[0] // 3
    return hessian.reshape(n, 3, n, 3)


def atom_blocks_to_dense(hessian: torch.Tensor) -> torch.Tensor:
    """(N, 3, N, 3) -> (3N, 3N)."""
    n = hessian.shape[0]
    return hessian.reshape(3 * n, 3 * n)


def dense_to_mace_layout(hessian: torch.Tensor) -> torch.Tensor:
    """(3N, 3N) -> (3N, N, 3), the layout of MACE's ``compute_hessian`` output."""
    n = hessian.shape[0] // 3
    return hessian.reshape(3 * n, n, 3)


def mace_layout_to_dense(hessian: torch.Tensor) -> torch.Tensor:
    """(3N, N, 3) -> (3N, 3N)."""
    return hessian.reshape(hessian.shape[0], hessian.shape[0])
