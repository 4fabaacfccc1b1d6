"""Atomic graphs: a batch of structures, and the head's pair graph.

An :class:`AtomicGraph` holds one or many structures concatenated along the atom axis
(the torch-geometric convention: ``batch`` maps atoms to structures, ``ptr`` holds the
offsets). A :class:`PairGraph` lists every ordered pair ``(a, b)``, ``a != b``, of atoms in the
same structure closer than ``hessian_cutoff``: the pairs whose 3x3 Hessian blocks the head
predicts. Pairs outside the cutoff have exactly zero blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from hip_head.errors import InvalidStructureError

#: Atoms closer than this (Å) are reported as coincident: no MLIP gives a meaningful Hessian there.
MIN_INTERATOMIC_DISTANCE = 0.1


@dataclass
class AtomicGraph:
    """One or many structures, concatenated along the atom axis.

    Attributes:
        positions: [N, 3] Cartesian positions, Å.
        atomic_numbers: [N] int64 atomic numbers Z.
        batch: [N] int64 structure index of each atom.
        ptr: [B + 1] int64 offsets; atoms of structure ``g`` are ``ptr[g]:ptr[g+1]``.
        cell: [B, 3, 3] lattice vectors as rows, Å (zeros where non-periodic), or None.
        pbc: [B, 3] bool periodic directions, or None (all non-periodic).
        charge: [B] total charge, e, or None.
        spin: [B] spin multiplicity, or None.
    """

    positions: torch.Tensor
    atomic_numbers: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    cell: torch.Tensor | None = None
    pbc: torch.Tensor | None = None
    charge: torch.Tensor | None = None
    spin: torch.Tensor | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_ase(
        cls,
        atoms: Atoms | Sequence[Atoms],
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> AtomicGraph:
        """Build a graph from one ``ase.Atoms`` or a sequence of them (a batch).

        Args:
            atoms: one structure or a list of structures.
            dtype: floating dtype of positions and cell (default: torch's default dtype).
            device: torch device.

        Returns:
            The batched graph (positions in Å). Charge and spin are read from
            ``atoms.info["charge"]`` / ``atoms.info["spin"]`` when present.

        Raises:
            InvalidStructureError: empty input, an empty structure, NaN/inf positions or
                coincident atoms (the message names the structure and atoms).
        """
        dtype = dtype or torch.get_default_dtype()
        structures = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        if not structures:
            raise InvalidStructureError("no structures given: pass at least one ase.Atoms")
        counts = [len(a) for a in structures]
        positions = np.concatenate([a.get_positions() for a in structures]) if sum(counts) else None
        if positions is None:
            raise InvalidStructureError("structure 0 is empty: it has no atoms")
        numbers = np.concatenate([a.get_atomic_numbers() for a in structures])
        ptr = np.concatenate([[0], np.cumsum(counts)])
        batch = np.repeat(np.arange(len(structures)), counts)
        any_pbc = any(a.pbc.any() for a in structures)
        cell = pbc = None
        if any_pbc:
            cell = torch.tensor(np.stack([a.cell.array for a in structures]), dtype=dtype)
            pbc = torch.tensor(np.stack([a.pbc for a in structures]), dtype=torch.bool)
        charge = spin = None
        if any("charge" in a.info for a in structures):
            charge = torch.tensor(
                [float(a.info.get("charge", 0.0)) for a in structures], dtype=dtype
            )
        if any("spin" in a.info for a in structures):
            spin = torch.tensor([float(a.info.get("spin", 1.0)) for a in structures], dtype=dtype)
        graph = cls(
            positions=torch.tensor(positions, dtype=dtype),
            atomic_numbers=torch.tensor(numbers, dtype=torch.long),
            batch=torch.tensor(batch, dtype=torch.long),
            ptr=torch.tensor(ptr, dtype=torch.long),
            cell=cell,
            pbc=pbc,
            charge=charge,
            spin=spin,
        )
        graph.validate()
        return graph.to(device)

    # ------------------------------------------------------------------ properties
    @property
    def num_graphs(self) -> int:
        """Number of structures B."""
        return int(self.ptr.numel() - 1)

    @property
    def num_atoms(self) -> int:
        """Total number of atoms N over the batch."""
        return int(self.positions.shape[0])

    @property
    def atoms_per_graph(self) -> torch.Tensor:
        """[B] int64 atom count of each structure."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def is_periodic(self) -> bool:
        """True when any structure has a periodic direction."""
        return self.pbc is not None and bool(self.pbc.any())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to ``device`` and cast floating tensors to ``dtype``. Returns a new graph."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                if dtype is not None and value.is_floating_point():
                    value = value.to(dtype=dtype)
                if device is not None:
                    value = value.to(device)
            out[f.name] = value
        return replace(self, **out)

    def with_positions(self, positions: torch.Tensor) -> AtomicGraph:
        """Return a copy that uses ``positions`` [N, 3] (Å), e.g. a tensor requiring grad."""
        return replace(self, positions=positions)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check the structures are ones a potential can be asked about.

        Raises:
            InvalidStructureError: an empty structure, NaN/inf positions (naming the atom),
                or two atoms closer than ``MIN_INTERATOMIC_DISTANCE`` Å (naming both).
        """
        counts = self.atoms_per_graph
        if self.num_graphs == 0:
            raise InvalidStructureError("the graph holds no structures")
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            raise InvalidStructureError(f"structure {int(empty[0])} is empty: it has no atoms")
        bad = ~torch.isfinite(self.positions).all(dim=1)
        if bad.any():
            atom = int(torch.nonzero(bad)[0])
            g = int(self.batch[atom])
            local = atom - int(self.ptr[g])
            sym = chemical_symbols[int(self.atomic_numbers[atom])]
            raise InvalidStructureError(
                f"structure {g}: atom {local} ({sym}) has a non-finite position "
                f"{self.positions[atom].tolist()}"
            )
        pairs = all_pairs(self)
        if pairs.numel():
            vec = pair_vectors(self, pairs)
            dist = vec.norm(dim=-1)
            close = dist < MIN_INTERATOMIC_DISTANCE
            if close.any():
                k = int(torch.nonzero(close)[0])
                a, b = int(pairs[0, k]), int(pairs[1, k])
                g = int(self.batch[a])
                la, lb = a - int(self.ptr[g]), b - int(self.ptr[g])
                sa = chemical_symbols[int(self.atomic_numbers[a])]
                sb = chemical_symbols[int(self.atomic_numbers[b])]
                raise InvalidStructureError(
                    f"structure {g}: atoms {la} ({sa}) and {lb} ({sb}) are {float(dist[k]):.3g} Å "
                    f"apart (coincident; minimum {MIN_INTERATOMIC_DISTANCE} Å)"
                )


def pairs_within_structures(ptr: torch.Tensor, graphs: torch.Tensor | None = None) -> torch.Tensor:
    """Every ordered pair of distinct atoms in the same structure, vectorised over structures.

    Args:
        ptr: [B + 1] int64 structure offsets.
        graphs: [G] int64 structures to include (default: all).

    Returns:
        [2, P] int64 global atom indices ``(a, b)``, ``a != b``, ``P = Σ_g N_g (N_g - 1)``,
        sorted by ``a`` then ``b`` within each structure, structures in the order given.
    """
    if graphs is None:
        graphs = torch.arange(ptr.numel() - 1, device=ptr.device)
    starts, counts = ptr[graphs], ptr[graphs + 1] - ptr[graphs]
    block = counts * counts  # n_g * n_g candidates per structure
    owner = torch.repeat_interleave(torch.arange(graphs.numel(), device=ptr.device), block)
    local = torch.arange(int(block.sum()), device=ptr.device) - torch.repeat_interleave(
        torch.cumsum(block, 0) - block, block
    )
    n = counts[owner]
    a = starts[owner] + local // n
    b = starts[owner] + local % n
    keep = a != b
    return torch.stack([a[keep], b[keep]])


def all_pairs(graph: AtomicGraph) -> torch.Tensor:
    """Every ordered pair of distinct atoms in the same structure of ``graph``.

    Returns:
        [2, P] int64 global atom indices, see :func:`pairs_within_structures`.
    """
    return pairs_within_structures(graph.ptr.to(graph.positions.device))


def pair_vectors(graph: AtomicGraph, pairs: torch.Tensor) -> torch.Tensor:
    """Vectors r_b - r_a for each pair (minimum image in periodic directions).

    Args:
        graph: the batch.
        pairs: [2, P] global atom indices (a, b).

    Returns:
        [P, 3] vectors, Å, differentiable with respect to ``graph.positions``. In periodic
        structures the minimum-image vector is used, exact when the Hessian cutoff is below
        half the shortest cell height.
    """
    a, b = pairs
    vec = graph.positions[b] - graph.positions[a]
    if graph.is_periodic:
        inverse = _inverse_cells(graph.cell, graph.pbc)[graph.batch[a]]  # [P, 3, 3]
        pbc = graph.pbc[graph.batch[a]].to(vec.dtype)  # [P, 3]
        frac = torch.einsum("pj,pji->pi", vec.detach(), inverse)
        shift = torch.round(frac) * pbc
        vec = vec - torch.einsum("pi,pij->pj", shift, graph.cell[graph.batch[a]])
    return vec


def _inverse_cells(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] inverses of the cells (rows = lattice vectors) for fractional coordinates.

    Non-periodic directions may have zero lattice vectors (molecules in a mixed batch, slabs);
    those rows are replaced by unit axes first, and a pseudo-inverse covers what stays singular.
    Only the periodic components of the fractional coordinates are used.
    """
    cell = cell.detach()
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
    usable = (cell.norm(dim=-1, keepdim=True) > 0) & pbc.unsqueeze(-1)
    filled = torch.where(usable, cell, eye)
    return torch.linalg.pinv(filled)


@dataclass
class PairGraph:
    """The head's pair graph: ordered atom pairs within ``cutoff``.

    Attributes:
        index: [2, P] int64 global atom indices (a, b), a != b, same structure.
        vectors: [P, 3] r_b - r_a, Å (differentiable w.r.t. positions).
        lengths: [P] |r_b - r_a|, Å.
        reverse: [P] int64 position of the pair (b, a) for each pair (a, b).
        cutoff: the cutoff used, Å.
    """

    index: torch.Tensor
    vectors: torch.Tensor
    lengths: torch.Tensor
    reverse: torch.Tensor
    cutoff: float

    @property
    def num_pairs(self) -> int:
        """Number of ordered pairs P."""
        return int(self.index.shape[1])


def build_pair_graph(graph: AtomicGraph, cutoff: float) -> PairGraph:
    """All ordered pairs of distinct atoms in the same structure closer than ``cutoff``.

    Args:
        graph: the batch.
        cutoff: Hessian cutoff, Å (``float("inf")`` for complete graphs).

    Returns:
        The pair graph; both (a, b) and (b, a) are always present together.
    """
    pairs = all_pairs(graph)
    vectors = pair_vectors(graph, pairs)
    lengths = vectors.norm(dim=-1)
    if np.isfinite(cutoff):
        keep = lengths.detach() < cutoff
        pairs, vectors, lengths = pairs[:, keep], vectors[keep], lengths[keep]
    n = graph.num_atoms
    key = pairs[0] * n + pairs[1]  # sorted ascending by construction
    reverse = torch.searchsorted(key, pairs[1] * n + pairs[0])
    return PairGraph(index=pairs, vectors=vectors, lengths=lengths, reverse=reverse, cutoff=cutoff)
