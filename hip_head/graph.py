"""Atomic graphs: a batch of structures, and the head's pair graph.

An :class:`AtomicGraph` holds one or many structures concatenated along the atom axis
(the torch-geometric convention: ``batch`` maps atoms to structures, ``ptr`` holds the
offsets). A :class:`PairGraph` lists every ordered pair ``(a, b)`` of atoms in the same
structure closer than ``hessian_cutoff`` (in periodic structures: every periodic image of ``b``
within the cutoff of ``a``): the pairs whose 3x3 Hessian blocks the head predicts. Pairs outside
the cutoff have exactly zero blocks. Both come from one radius search,
:func:`hip_head.neighbors.radius_graph`, whose cost grows linearly with the number of atoms.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from hip_head.errors import CloseContactWarning, InvalidArgumentError, InvalidStructureError
from hip_head.neighbors import radius_graph, reverse_pairs

#: Atoms closer than this (Å) are reported as coincident: no MLIP gives a meaningful Hessian there.
MIN_INTERATOMIC_DISTANCE = 0.1

#: Atoms closer than this (Å; the shortest bond, H₂, is 0.74 Å) get a :class:`CloseContactWarning`.
CLOSE_CONTACT_DISTANCE = 0.5


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

        The coincident-atom check is a radius search with cutoff ``MIN_INTERATOMIC_DISTANCE``
        (periodic images included): its cost grows linearly with the number of atoms.

        Raises:
            InvalidStructureError: an empty structure, NaN/inf positions (naming the atom),
                two atoms closer than ``MIN_INTERATOMIC_DISTANCE`` Å (naming both), or a
                periodic structure whose periodic lattice vectors are singular.

        Warns:
            CloseContactWarning: two atoms closer than ``CLOSE_CONTACT_DISTANCE`` Å (the
                closest pair is named).
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
        index, shifts = radius_graph(
            self.positions, CLOSE_CONTACT_DISTANCE, self.batch, self.cell, self.pbc
        )
        distinct = index[0] != index[1]  # an atom's own periodic images are not "coincident"
        if not distinct.any():
            return
        index, shifts = index[:, distinct], shifts[distinct]
        lengths = pair_vectors(self, index, shifts).detach().norm(dim=-1)
        coincident = torch.nonzero(lengths < MIN_INTERATOMIC_DISTANCE).flatten()
        k = int(coincident[0]) if coincident.numel() else int(torch.argmin(lengths))
        a, b = int(index[0, k]), int(index[1, k])
        g = int(self.batch[a])
        la, lb = a - int(self.ptr[g]), b - int(self.ptr[g])
        sa = chemical_symbols[int(self.atomic_numbers[a])]
        sb = chemical_symbols[int(self.atomic_numbers[b])]
        where = f"structure {g}: atoms {la} ({sa}) and {lb} ({sb}) are {float(lengths[k]):.3g} Å"
        if coincident.numel():
            raise InvalidStructureError(
                f"{where} apart (coincident; minimum {MIN_INTERATOMIC_DISTANCE} Å)"
            )
        warnings.warn(
            f"{where} apart, closer than any chemical bond ({CLOSE_CONTACT_DISTANCE} Å): the "
            "model extrapolates far outside its training data (energies and Hessians "
            "there are not meaningful)",
            CloseContactWarning,
            stacklevel=3,
        )


def pairs_within_structures(ptr: torch.Tensor, graphs: torch.Tensor | None = None) -> torch.Tensor:
    """Every ordered pair of distinct atoms in the same structure, vectorised over structures.

    Quadratic in the structure sizes: for complete graphs of small molecules. Pairs within a
    cutoff come from :func:`hip_head.neighbors.radius_graph` instead.

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


def pair_vectors(
    graph: AtomicGraph, pairs: torch.Tensor, shifts: torch.Tensor | None = None
) -> torch.Tensor:
    """Vectors r_b - r_a (+ the image offset) for each pair.

    Args:
        graph: the batch.
        pairs: [2, P] global atom indices (a, b).
        shifts: [P, 3] int64 cell-image offsets of b (as :func:`radius_graph` returns them):
            the vector is ``r_b - r_a + shifts @ cell``. None: the minimum image in periodic
            directions, exact when every pair is closer than half the shortest cell height.

    Returns:
        [P, 3] vectors, Å, differentiable with respect to ``graph.positions``.
    """
    a, b = pairs
    vec = graph.positions[b] - graph.positions[a]
    if not graph.is_periodic:
        return vec
    cell = graph.cell[graph.batch[a]]  # [P, 3, 3]
    if shifts is None:
        inverse = _inverse_cells(graph.cell, graph.pbc)[graph.batch[a]]  # [P, 3, 3]
        pbc = graph.pbc[graph.batch[a]].to(vec.dtype)  # [P, 3]
        frac = torch.einsum("pj,pji->pi", vec.detach(), inverse)
        return vec - torch.einsum("pi,pij->pj", torch.round(frac) * pbc, cell)
    # Elementwise (not a matmul) so autocast leaves the offset at full precision.
    return vec + (shifts.to(vec.dtype).unsqueeze(-1) * cell).sum(dim=1)


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
    """The head's pair graph: ordered atom pairs within ``cutoff``, periodic images included.

    In a periodic structure whose cell is smaller than twice the cutoff, atom ``a`` may pair
    with several images of ``b`` (and with images of itself): each image is its own pair, with
    its own vector and ``shifts``, and the Hessian blocks of all images of ``(a, b)`` add up
    to the block H_ab of the cell (a Γ-point Hessian: moving atom b moves all its images).

    Attributes:
        index: [2, P] int64 global atom indices (a, b), same structure; a == b only for a
            periodic image of a. Sorted by a, then b, then shifts.
        vectors: [P, 3] r_b - r_a + shifts @ cell, Å (differentiable w.r.t. positions).
        lengths: [P] |vectors|, Å.
        reverse: [P] int64 position of the pair (b, a, -shifts) for each pair (a, b, shifts).
        cutoff: the cutoff used, Å.
        shifts: [P, 3] int64 cell-image offsets of b (all zero for molecules), or None (all
            zero).
    """

    index: torch.Tensor
    vectors: torch.Tensor
    lengths: torch.Tensor
    reverse: torch.Tensor
    cutoff: float
    shifts: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        """Number of ordered pairs P."""
        return int(self.index.shape[1])


def build_pair_graph(graph: AtomicGraph, cutoff: float) -> PairGraph:
    """Every ordered pair of atoms in the same structure closer than ``cutoff``.

    One radius search (:func:`hip_head.neighbors.radius_graph`, a cell list): time and memory
    grow with the number of pairs within the cutoff, linearly in the atom count at a fixed
    density. For a molecule smaller than the cutoff (or an infinite cutoff) this is every pair.

    Args:
        graph: the batch.
        cutoff: Hessian cutoff, Å (``float("inf")`` for complete graphs of molecules; periodic
            structures need a finite cutoff).

    Returns:
        The pair graph; (a, b, S) and (b, a, -S) are always present together.

    Raises:
        ValueError: an infinite cutoff with periodic structures in the batch.
    """
    if graph.is_periodic and not np.isfinite(cutoff):
        raise InvalidArgumentError(
            "the Hessian cutoff is infinite but the batch holds periodic structures, which "
            "have infinitely many pairs: give the head a finite hessian_cutoff"
        )
    index, shifts = radius_graph(graph.positions, cutoff, graph.batch, graph.cell, graph.pbc)
    vectors = pair_vectors(graph, index, shifts)
    lengths = vectors.norm(dim=-1)
    reverse = reverse_pairs(index, shifts, graph.num_atoms)
    return PairGraph(
        index=index,
        vectors=vectors,
        lengths=lengths,
        reverse=reverse,
        cutoff=cutoff,
        shifts=shifts,
    )
