"""One radius search for the whole package: a vectorised cell list with periodic images.

:func:`radius_graph` lists every ordered pair of atoms ``(i, j)`` of the same structure whose
distance is below a cutoff, with the integer cell-image offset of ``j``. It is pure torch,
runs on any device, and costs time and memory linear in the number of atoms at a fixed
density: atoms are sorted into cubic bins of side at least the cutoff, and each atom is
compared only with the atoms of its own and the 26 neighbouring bins.

Periodic structures are handled by replicating the (wrapped) atoms into every image that can
lie within the cutoff of the cell, so cells smaller than twice the cutoff, triclinic cells,
slabs and wires (periodic along two or one axis) and batches mixing periodic and
non-periodic structures all give every pair within the cutoff, image by image, exactly the set
a brute-force search over all images gives.
"""

from __future__ import annotations

import math

import torch

from hip_head.errors import InvalidArgumentError, InvalidStructureError

__all__ = ["radius_graph", "reverse_pairs"]

# Bins, image ranges and image windows are widened by this relative margin so that rounding in
# the wrapped coordinates can never drop a pair the final distance test (in the caller's
# dtype) keeps; a wider bin only adds candidates that the distance test removes.
_MARGIN = 1e-2

# Candidate pairs examined at once; bounds the search's working memory for large systems.
_CHUNK = 1 << 20

# The 27 integer offsets to a bin's neighbours (itself included), [27, 3].
_OFFSETS = torch.stack(torch.meshgrid(*(torch.arange(-1, 2),) * 3, indexing="ij"), dim=-1).reshape(
    -1, 3
)


def radius_graph(
    positions: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor,
    cell: torch.Tensor | None = None,
    pbc: torch.Tensor | None = None,
    *,
    self_interaction: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair of atoms of the same structure closer than ``cutoff``.

    A pair ``(i, j)`` with image offset ``S`` is listed when
    ``|r_j - r_i + S @ cell[batch[i]]| < cutoff``. In periodic directions every image within
    the cutoff is listed (an atom may pair with several images of another atom, and with
    images of itself); in non-periodic directions ``S`` is zero. Both ``(i, j, S)`` and
    ``(j, i, -S)`` are always present.

    Indices are computed without gradient; form the vectors from ``positions`` to
    differentiate through them::

        i, j = index
        offset = (shifts.to(positions.dtype).unsqueeze(-1) * cell[batch[i]]).sum(dim=1)
        vec = positions[j] - positions[i] + offset  # [E, 3], Å

    Args:
        positions: [N, 3] Cartesian positions, Å.
        cutoff: radius, Å, > 0. ``float("inf")`` lists all pairs of each structure (allowed
            only when no structure is periodic).
        batch: [N] int64 structure index of each atom (need not be sorted).
        cell: [B, 3, 3] lattice vectors as rows, Å, or None. Rows along non-periodic
            directions are ignored (they may be zero).
        pbc: [B, 3] bool periodic directions, or None (no structure is periodic).
        self_interaction: also list each atom with itself (``i == j``, ``S = 0``).

    Returns:
        ``(index, shifts)``: index [2, E] int64 global atom indices ``(i, j)``; shifts [E, 3]
        int64 image offsets in units of the lattice vectors. Sorted by ``i``, then ``j``, then
        ``S`` (lexicographically).

    Raises:
        InvalidStructureError: non-finite positions, or a structure with periodic directions
            whose periodic lattice vectors are zero or linearly dependent (names the
            structure).
        ValueError: a non-positive cutoff, an infinite cutoff with periodic structures, or
            inconsistent shapes.
    """
    device = positions.device
    n = int(positions.shape[0])
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise InvalidArgumentError(
            f"positions must have shape [N, 3], got {tuple(positions.shape)}"
        )
    if batch.shape != (n,):
        raise InvalidArgumentError(f"batch must have shape [{n}], got {tuple(batch.shape)}")
    if not cutoff > 0:
        raise InvalidArgumentError(f"cutoff must be positive, got {cutoff}")
    if cell is None and pbc is not None and bool(pbc.any()):
        raise InvalidArgumentError("pbc was given without a cell: pass both or neither")
    empty = (
        torch.empty(2, 0, dtype=torch.long, device=device),
        torch.empty(0, 3, dtype=torch.long, device=device),
    )
    if n == 0:
        return empty
    # No gradient, and full precision even inside an autocast region (a bf16 distance test
    # would drop or add pairs).
    with torch.no_grad(), torch.autocast(positions.device.type, enabled=False):
        return _radius_graph(positions.detach(), float(cutoff), batch, cell, pbc, self_interaction)


def _radius_graph(
    positions: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor,
    cell: torch.Tensor | None,
    pbc: torch.Tensor | None,
    self_interaction: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`radius_graph` after its argument checks (no grad, autocast off)."""
    device = positions.device
    n = int(positions.shape[0])
    batch = batch.to(device=device, dtype=torch.long)
    num_graphs = int(batch.max()) + 1
    if cell is not None:
        num_graphs = max(num_graphs, int(cell.shape[0]))
    finite = torch.isfinite(positions).all(dim=1)
    if not bool(finite.all()):
        atom = int(torch.nonzero(~finite)[0])
        raise InvalidStructureError(
            f"structure {int(batch[atom])}: atom {atom} has a non-finite position "
            f"{positions[atom].tolist()}"
        )
    x = positions.to(torch.float64)
    periodic = torch.zeros(num_graphs, 3, dtype=torch.bool, device=device)
    if pbc is not None and cell is not None:
        periodic[: pbc.shape[0]] = pbc.to(device=device, dtype=torch.bool)
    any_periodic = bool(periodic.any())
    if any_periodic and not math.isfinite(cutoff):
        raise InvalidArgumentError(
            "an infinite cutoff has infinitely many periodic images: use a finite one"
        )
    reach = cutoff * (1.0 + _MARGIN)  # search radius, Å (inf stays inf)

    # ---- periodic images: wrap atoms into their cell, then replicate the images near it
    zeros3 = torch.zeros(n, 3, dtype=torch.long, device=device)
    wrap = zeros3  # [N, 3] integer image that moves each atom into its cell
    atom = torch.arange(n, device=device)  # per image: the atom it copies
    image = zeros3  # per image: its offset from the wrapped atom
    lattice = None
    if any_periodic:
        lattice = torch.where(periodic.unsqueeze(-1), cell.to(device, torch.float64), 0.0)
        basis = _periodic_basis(lattice, periodic)  # [B, 3, 3], invertible
        inverse = torch.linalg.inv(basis)
        frac = torch.einsum("nk,nkl->nl", x, inverse[batch])  # [N, 3]
        wrap = torch.where(periodic[batch], -torch.floor(frac), 0.0).to(torch.long)
        frac = frac + wrap
        # |Δfrac_k| <= reach * |column k of the inverse| for any vector shorter than reach.
        window = reach * inverse.norm(dim=1)  # [B, 3]
        reps = torch.where(periodic, torch.ceil(window), 0.0).to(torch.long)  # [B, 3]
        image_frac = frac
        for k in range(3):
            if not bool(periodic[:, k].any()):
                continue
            count = 2 * reps[batch[atom], k] + 1
            offset = _ragged_arange(count) - torch.repeat_interleave(reps[batch[atom], k], count)
            atom = torch.repeat_interleave(atom, count)
            image = torch.repeat_interleave(image, count, dim=0)
            image[:, k] += offset
            image_frac = torch.repeat_interleave(image_frac, count, dim=0)
            image_frac[:, k] += offset
            g = batch[atom]
            inside = (image_frac[:, k] >= -window[g, k]) & (image_frac[:, k] < 1 + window[g, k])
            keep = inside | ~periodic[g, k]
            atom, image, image_frac = atom[keep], image[keep], image_frac[keep]
        centre_x = x + torch.einsum("nk,nkl->nl", wrap.to(x.dtype), lattice[batch])
        image_x = centre_x[atom] + torch.einsum(
            "mk,mkl->ml", image.to(x.dtype), lattice[batch[atom]]
        )
    else:
        centre_x = image_x = x

    # ---- cell list: cubic bins of side >= reach, per structure
    image_graph = batch[atom]
    lo = torch.full((num_graphs, 3), float("inf"), dtype=x.dtype, device=device)
    lo = lo.scatter_reduce(0, image_graph[:, None].expand(-1, 3), image_x, "amin")
    hi = torch.full((num_graphs, 3), -float("inf"), dtype=x.dtype, device=device)
    hi = hi.scatter_reduce(0, image_graph[:, None].expand(-1, 3), image_x, "amax")
    lo = torch.where(torch.isfinite(lo), lo, 0.0)
    extent = torch.where(torch.isfinite(hi), hi, 0.0) - lo  # [B, 3]
    # Coarsen bins of very extended structures so the bin keys fit in int64.
    max_bins = int((2.0**61 / num_graphs) ** (1.0 / 3.0)) - 4
    side = torch.clamp(extent.max(dim=1).values / max_bins, min=reach)  # [B]
    centre_bin = _bin(centre_x, lo[batch], side[batch])
    image_bin = _bin(image_x, lo[image_graph], side[image_graph])
    dims = image_bin.max(dim=0).values + 3  # room for the -1 and +1 neighbours
    image_key = _key(image_graph, image_bin + 1, dims)
    image_key, order = torch.sort(image_key)
    image_atom, image_shift = atom[order], image[order]

    query = _key(batch[:, None], centre_bin[:, None, :] + 1 + _OFFSETS.to(device), dims)  # [N, 27]
    start = torch.searchsorted(image_key, query.reshape(-1))
    stop = torch.searchsorted(image_key, query.reshape(-1), right=True)
    counts = (stop - start).reshape(n, 27).sum(dim=1)  # candidates per atom
    start, stop = start.reshape(n, 27), stop.reshape(n, 27)

    # ---- candidates, a chunk of atoms at a time; keep those within the cutoff
    image_x = image_x[order]
    reach2 = reach * reach
    found_i, found_j, found_s = [], [], []
    for first, last in _chunks(counts, _CHUNK):
        size = (stop[first:last] - start[first:last]).reshape(-1)
        centre = torch.repeat_interleave(
            torch.arange(first, last, device=device), counts[first:last]
        )
        # slot = start of the candidate's bin range + its rank within that range
        begin = torch.cumsum(size, 0) - size - start[first:last].reshape(-1)
        slot = torch.arange(int(size.sum()), device=device) - torch.repeat_interleave(begin, size)
        # Cheap test on the wrapped float64 coordinates first, exact test on the survivors.
        delta = image_x[slot]
        delta -= torch.repeat_interleave(centre_x[first:last], counts[first:last], dim=0)
        near = delta.square_().sum(dim=1) < reach2
        centre, slot = centre[near], slot[near]
        j = image_atom[slot]
        vec = positions[j] - positions[centre]
        shift = image_shift[slot]
        if any_periodic:
            shift = shift + wrap[j] - wrap[centre]
            cells = lattice.to(positions.dtype)[batch[centre]]  # [E, 3, 3]
            vec = vec + (shift.to(positions.dtype).unsqueeze(-1) * cells).sum(dim=1)
        keep = vec.norm(dim=-1) < cutoff
        if not self_interaction:
            keep &= (centre != j) | shift.any(dim=1)
        found_i.append(centre[keep])
        found_j.append(j[keep])
        found_s.append(shift[keep])
    i = torch.cat(found_i) if found_i else torch.empty(0, dtype=torch.long, device=device)
    j = torch.cat(found_j) if found_j else torch.empty(0, dtype=torch.long, device=device)
    shifts = torch.cat(found_s) if found_s else torch.empty(0, 3, dtype=torch.long, device=device)
    return _sorted(i, j, shifts, n)


def _periodic_basis(lattice: torch.Tensor, periodic: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] invertible bases: periodic lattice rows, completed by orthonormal rows.

    Non-periodic rows are replaced by an orthonormal basis of the complement of the periodic
    rows' span, so fractional coordinates along periodic directions are well defined for
    slabs and wires whatever their non-periodic cell vectors hold.

    Raises:
        InvalidStructureError: the periodic rows of a periodic structure are zero or
            linearly dependent.
    """
    gram = lattice.transpose(1, 2) @ lattice  # [B, 3, 3], kernel = complement of the span
    _, vectors = torch.linalg.eigh(gram)  # columns by ascending eigenvalue
    rank = torch.cumsum((~periodic).long(), dim=1) - 1  # k-th non-periodic row takes column k
    complement = torch.gather(
        vectors.transpose(1, 2), 1, rank.clamp(min=0)[..., None].expand(-1, -1, 3)
    )
    basis = torch.where(periodic.unsqueeze(-1), lattice, complement)
    lengths = torch.where(periodic, lattice.norm(dim=-1), 1.0).prod(dim=1)
    volume = torch.linalg.det(basis).abs()
    singular = periodic.any(dim=1) & ~(volume > 1e-8 * lengths)
    if bool(singular.any()):
        g = int(torch.nonzero(singular)[0])
        raise InvalidStructureError(
            f"structure {g}: the cell {lattice[g].tolist()} is singular along its periodic "
            f"directions {periodic[g].tolist()}; give linearly independent lattice vectors"
        )
    return basis


def _bin(x: torch.Tensor, origin: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """[M, 3] int64 bin of each point: ``floor((x - origin) / side)``, 0 for infinite bins."""
    scaled = (x - origin) / side[:, None]
    return torch.floor(torch.nan_to_num(scaled, nan=0.0)).to(torch.long)


def _key(graph: torch.Tensor, cell_bin: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """int64 key of (structure, bin), ``bin`` components in ``[0, dims)``; row-major."""
    return ((graph * dims[0] + cell_bin[..., 0]) * dims[1] + cell_bin[..., 1]) * dims[2] + cell_bin[
        ..., 2
    ]


def _ragged_arange(counts: torch.Tensor) -> torch.Tensor:
    """``cat([arange(c) for c in counts])``, vectorised. [sum(counts)] int64."""
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts)


def _chunks(counts: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Split atoms into consecutive ranges whose candidate counts sum to about ``budget``."""
    n = int(counts.numel())
    total = torch.cumsum(counts, 0)
    if n == 0:
        return []
    if int(total[-1]) <= budget:
        return [(0, n)]
    marks = torch.searchsorted(
        total, torch.arange(budget, int(total[-1]), budget, device=total.device)
    )
    bounds = sorted({0, n, *(int(m) + 1 for m in marks.tolist() if int(m) + 1 < n)})
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def reverse_pairs(index: torch.Tensor, shifts: torch.Tensor, num_atoms: int) -> torch.Tensor:
    """Position of the reverse pair ``(j, i, -S)`` of every pair ``(i, j, S)``.

    Args:
        index: [2, E] int64 pairs ``(i, j)``, closed under reversal (as :func:`radius_graph`
            returns them), in any order, without repeated pairs.
        shifts: [E, 3] int64 image offsets ``S``.
        num_atoms: N, more than the largest atom index.

    Returns:
        [E] int64 ``reverse`` with ``index[:, reverse[k]] == index[[1, 0], k]`` and
        ``shifts[reverse[k]] == -shifts[k]``.
    """
    forward_key = _lexicographic_key(index[0], index[1], shifts, num_atoms)
    if forward_key is not None and bool((forward_key[1:] > forward_key[:-1]).all()):
        backward_key = _lexicographic_key(index[1], index[0], -shifts, num_atoms)
        return torch.searchsorted(forward_key, backward_key)
    forward = _lexicographic_order(index[0], index[1], shifts, num_atoms)
    backward = _lexicographic_order(index[1], index[0], -shifts, num_atoms)
    reverse = torch.empty_like(forward)
    reverse[backward] = forward  # the k-th smallest reversed pair is the k-th smallest pair
    return reverse


def _lexicographic_key(
    i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor, num_atoms: int
) -> torch.Tensor | None:
    """[E] int64 key increasing with (i, j, shifts) lexicographically; None if it would overflow.

    The shift code depends only on max |shifts|, which a set of pairs and its reversal share,
    so their keys are comparable.
    """
    bound = int(shifts.abs().max()) if shifts.numel() else 0
    span = 2 * bound + 1
    if num_atoms * num_atoms * span**3 >= 2**62:
        return None
    code = (shifts[:, 0] * span + shifts[:, 1]) * span + shifts[:, 2] + (span**3 - 1) // 2
    return (i * num_atoms + j) * span**3 + code


def _lexicographic_order(
    i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor, num_atoms: int
) -> torch.Tensor:
    """[E] int64 permutation sorting pairs by ``i``, then ``j``, then ``shifts``."""
    key = _lexicographic_key(i, j, shifts, num_atoms)
    if key is not None:
        return torch.argsort(key)
    order = torch.arange(i.numel(), device=i.device)
    for column in (shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i):
        order = order[torch.sort(column[order], stable=True).indices]
    return order


def _sorted(
    i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor, num_atoms: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort pairs by ``i``, then ``j``, then ``shifts`` (lexicographically)."""
    order = _lexicographic_order(i, j, shifts, num_atoms)
    return torch.stack([i[order], j[order]]), shifts[order]
