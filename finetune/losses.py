"""Training losses and validation metrics for fine-tuning a HIP (pure torch, no Lightning).

Hessians are in the **flat** batch layout of :mod:`hip_head.assemble`: one 1-D tensor of length
Σ_g (3N_g)², each structure's (3N_g, 3N_g) matrix (index ``3a + α``) row-major, concatenated.

Units: energies eV, forces eV/Å, Hessians eV/Å², positions Å, masses amu; mass-weighted
(Eckart) eigenvalues eV/Å²/amu. Losses carry the units of their term (MAE) or their square
(MSE, ``frosq``).

Upstream HIP (see ``shared/research/hip_upstream.md`` §2.1–2.3):

- entrywise Hessian loss (MAE or MSE) over **all entries of the flat batch**, so big molecules
  weigh ∝ N² (``normalization="entry"``); ``"molecule"`` averages per molecule first;
- subspace ("eigen") loss: per molecule ``D = V_kᵀ Ĥ V_k − diag(Λ_k)`` with (Λ_k, V_k) the k
  lowest eigenpairs of the **raw** Cartesian label Hessian (constants, no backprop through
  eigh), ``dist(D)`` averaged over molecules;
- here also in the **vibrational** basis (:func:`vibrational_eigenpairs`): the lowest
  eigenpairs of the mass-weighted, Eckart-projected label Hessian, the modes whose sign sets
  the saddle index (the raw spectrum's lowest pairs at a stationary point are mostly the
  zero translations and rotations);
- default total ``1·MAE_E + 25·MAE_F + 10·MAE_H``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase.data import atomic_masses

from hip_head.assemble import split_flat
from hip_head.errors import HIPError
from hip_head.units import HARTREE_PER_BOHR2_IN_EV_PER_A2
from hip_head.vibrations import HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU, eckart_projector

__all__ = [
    "EigenTargets",
    "LossWeights",
    "MissingLabelError",
    "energy_loss",
    "forces_loss",
    "hessian_loss",
    "hessian_metrics",
    "lowest_eigenpairs",
    "subspace_loss",
    "vibrational_eigenpairs",
    "total_loss",
]

CountsLike = Sequence[int] | torch.Tensor | np.ndarray

#: Raw (Cartesian) eigenvalues below minus this many eV/Å² count as negative in
#: :func:`hessian_metrics`.
RAW_NEGATIVE_THRESHOLD: float = 1e-6

#: Eckart eigenvalues below minus this many eV/Å²/amu count as negative: the HIP/HORM
#: −1e-6 Hartree/Bohr²/amu.
ECKART_NEGATIVE_THRESHOLD: float = HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU * (
    HARTREE_PER_BOHR2_IN_EV_PER_A2
)


class MissingLabelError(HIPError, ValueError):
    """A loss term has a positive weight but its label (or prediction) is missing."""


# ------------------------------------------------------------------------------------ helpers
def _counts_tensor(atoms_per_graph: CountsLike, device: torch.device) -> torch.Tensor:
    if isinstance(atoms_per_graph, torch.Tensor):
        return atoms_per_graph.reshape(-1).to(device=device, dtype=torch.long)
    return torch.as_tensor(np.asarray(atoms_per_graph).reshape(-1), dtype=torch.long, device=device)


def _flat_segments(counts: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment id [total], block size [B]) of the flat layout; checks the length."""
    sizes = (3 * counts) ** 2
    expected = int(sizes.sum())
    if total != expected:
        raise ValueError(
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
    raise ValueError(f"loss kind must be 'mae' or 'mse', got {kind!r}")


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


# ------------------------------------------------------------------------- entrywise losses
def hessian_loss(
    pred_flat: torch.Tensor,
    target_flat: torch.Tensor,
    atoms_per_graph: CountsLike,
    kind: str = "mae",
    normalization: str = "entry",
) -> torch.Tensor:
    """Entrywise Hessian loss on the flat batch layout.

    Args:
        pred_flat: [Σ_g (3N_g)²] predicted Hessian, eV/Å².
        target_flat: [Σ_g (3N_g)²] label Hessian, eV/Å².
        atoms_per_graph: [B] atom count N_g of each structure.
        kind: ``"mae"`` (mean |Δ|, eV/Å²) or ``"mse"`` (mean Δ², (eV/Å²)²).
        normalization: ``"entry"``: mean over all entries of the batch (upstream HIP; a
            structure weighs ∝ (3N_g)²). ``"molecule"``: mean over each structure's entries,
            then mean over structures (every structure weighs the same).

    Returns:
        Scalar loss, differentiable w.r.t. ``pred_flat``.

    Raises:
        ValueError: bad ``kind``/``normalization`` or a length that does not match.
    """
    pred_flat, target_flat = pred_flat.reshape(-1), target_flat.reshape(-1)
    if pred_flat.shape != target_flat.shape:
        raise ValueError(f"pred {tuple(pred_flat.shape)} and target {tuple(target_flat.shape)}")
    counts = _counts_tensor(atoms_per_graph, pred_flat.device)
    seg, sizes = _flat_segments(counts, pred_flat.numel())
    err = _elementwise(pred_flat - target_flat, kind)
    if normalization == "entry":
        return err.mean()
    if normalization == "molecule":
        per_mol = err.new_zeros(counts.numel()).index_add(0, seg, err)
        return (per_mol / sizes.to(err.dtype)).mean()
    raise ValueError(f"normalization must be 'entry' or 'molecule', got {normalization!r}")


def energy_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kind: str = "mae",
    per_atom: bool = False,
    atoms_per_graph: CountsLike | None = None,
) -> torch.Tensor:
    """Energy loss.

    Args:
        pred: [B] predicted energies, eV.
        target: [B] label energies, eV.
        kind: ``"mae"`` or ``"mse"``.
        per_atom: compare E / N_g (eV/atom) instead of E.
        atoms_per_graph: [B] atom counts; required when ``per_atom``.

    Returns:
        Scalar mean over structures (eV for MAE, eV² for MSE; per atom when ``per_atom``).
    """
    pred, target = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
    diff = pred - target
    if per_atom:
        if atoms_per_graph is None:
            raise ValueError("per_atom=True needs atoms_per_graph")
        diff = diff / _counts_tensor(atoms_per_graph, pred.device).to(pred.dtype)
    return _elementwise(diff, kind).mean()


def forces_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mae") -> torch.Tensor:
    """Force loss: mean over all N×3 components (upstream L1 convention).

    Args:
        pred: [N, 3] predicted forces, eV/Å.
        target: [N, 3] label forces, eV/Å.
        kind: ``"mae"`` (eV/Å) or ``"mse"`` ((eV/Å)²).

    Returns:
        Scalar loss.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)}")
    return _elementwise(pred - target.to(pred.dtype), kind).mean()


# --------------------------------------------------------------------------- subspace loss
@dataclass
class EigenTargets:
    """The k lowest eigenpairs of each label Hessian of a batch, padded (constants, no grad).

    Padded so the subspace loss is a few batched matmuls. Padding is zero: rows ≥ 3N_g and
    columns ≥ k_g of ``vectors`` and entries ≥ k_g of ``values``. Datasets can cache one
    structure's ``EigenTargets`` (B = 1, e.g. via :meth:`per_structure`) and
    :meth:`collate` them into a batch.

    Attributes:
        values: [B, kmax] ascending eigenvalues of the raw Cartesian label Hessian, eV/Å².
        vectors: [B, 3Nmax, kmax] orthonormal eigenvectors (columns), index ``3a + α``.
        mask: [B, kmax] bool, True for the k_g = min(k, 3N_g) valid eigenpairs.
        atoms_per_graph: [B] int64 atom counts N_g.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    mask: torch.Tensor
    atoms_per_graph: torch.Tensor

    @property
    def num_graphs(self) -> int:
        """Number of structures B."""
        return int(self.values.shape[0])

    @property
    def k_per_graph(self) -> torch.Tensor:
        """[B] number of valid eigenpairs k_g."""
        return self.mask.sum(1)

    def to(self, *args, **kwargs) -> EigenTargets:
        """Move/cast like ``Tensor.to`` (dtype casts apply to values and vectors only)."""
        values = self.values.to(*args, **kwargs)
        return EigenTargets(
            values=values,
            vectors=self.vectors.to(*args, **kwargs),
            mask=self.mask.to(device=values.device),
            atoms_per_graph=self.atoms_per_graph.to(device=values.device),
        )

    def flat_values(self) -> torch.Tensor:
        """[Σ_g k_g] valid eigenvalues concatenated, eV/Å²."""
        return self.values[self.mask]

    def flat_vectors(self) -> torch.Tensor:
        """[Σ_g 3N_g k_g] each (3N_g, k_g) eigenvector matrix, row-major, concatenated."""
        return torch.cat([v.reshape(-1) for _, v in self.per_structure_pairs()])

    def per_structure_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """B pairs (values [k_g], vectors [3N_g, k_g]) without padding."""
        out = []
        for g in range(self.num_graphs):
            k = int(self.mask[g].sum())
            n3 = 3 * int(self.atoms_per_graph[g])
            out.append((self.values[g, :k], self.vectors[g, :n3, :k]))
        return out

    def per_structure(self) -> list[EigenTargets]:
        """Split into B single-structure ``EigenTargets`` (unpadded), e.g. to cache them."""
        return [
            EigenTargets(
                values=v[None].clone(),
                vectors=vec[None].clone(),
                mask=torch.ones(1, v.shape[0], dtype=torch.bool, device=v.device),
                atoms_per_graph=self.atoms_per_graph[g : g + 1].clone(),
            )
            for g, (v, vec) in enumerate(self.per_structure_pairs())
        ]

    @classmethod
    def collate(cls, items: Sequence[EigenTargets]) -> EigenTargets:
        """Concatenate (and re-pad) several ``EigenTargets`` in batch order."""
        pairs = [p for item in items for p in item.per_structure_pairs()]
        counts = torch.cat([item.atoms_per_graph.reshape(-1) for item in items])
        return cls._from_pairs(pairs, counts)

    @classmethod
    def _from_pairs(
        cls, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], counts: torch.Tensor
    ) -> EigenTargets:
        b = len(pairs)
        kmax = max((v.shape[0] for v, _ in pairs), default=0)
        mmax = max((vec.shape[0] for _, vec in pairs), default=0)
        ref = pairs[0][0] if pairs else torch.zeros(0)
        values = ref.new_zeros(b, kmax)
        vectors = ref.new_zeros(b, mmax, kmax)
        mask = torch.zeros(b, kmax, dtype=torch.bool, device=ref.device)
        for g, (v, vec) in enumerate(pairs):
            k, m = v.shape[0], vec.shape[0]
            values[g, :k] = v
            vectors[g, :m, :k] = vec
            mask[g, :k] = True
        return cls(values, vectors, mask, counts.to(device=ref.device, dtype=torch.long))


@torch.no_grad()
def lowest_eigenpairs(
    target_flat: torch.Tensor,
    atoms_per_graph: CountsLike,
    k: int | None = 8,
    eigh_dtype: torch.dtype = torch.float64,
) -> EigenTargets:
    """The k lowest eigenpairs of each (symmetrised) raw Cartesian label Hessian.

    Structures of equal size are diagonalised together with one batched ``torch.linalg.eigh``.
    Computed without grad: they are loss targets.

    Args:
        target_flat: [Σ_g (3N_g)²] label Hessian, eV/Å².
        atoms_per_graph: [B] atom counts N_g.
        k: eigenpairs kept per structure, k_g = min(k, 3N_g); ``None`` keeps all 3N_g.
        eigh_dtype: precision of the diagonalisation (results are cast back to the label's
            dtype).

    Returns:
        :class:`EigenTargets` (padded ``values`` [B, kmax], ``vectors`` [B, 3Nmax, kmax],
        ``mask``). ``.flat_values()`` gives [Σ k_g], ``.flat_vectors()`` the flat vectors.
    """
    target_flat = target_flat.detach().reshape(-1)
    counts = _counts_tensor(atoms_per_graph, target_flat.device)
    blocks = split_flat(target_flat, counts)
    count_list = counts.tolist()
    pairs: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(blocks)
    for n in sorted(set(count_list)):
        idx = [g for g, c in enumerate(count_list) if c == n]
        h = torch.stack([blocks[g] for g in idx]).to(eigh_dtype)
        vals, vecs = torch.linalg.eigh(0.5 * (h + h.transpose(-1, -2)))
        kg = 3 * n if k is None else min(int(k), 3 * n)
        for j, g in enumerate(idx):
            pairs[g] = (
                vals[j, :kg].to(target_flat.dtype),
                vecs[j, :, :kg].to(target_flat.dtype),
            )
    if not pairs:
        z = target_flat.new_zeros
        return EigenTargets(z(0, 0), z(0, 0, 0), torch.zeros(0, 0, dtype=torch.bool), counts)
    return EigenTargets._from_pairs(pairs, counts)  # type: ignore[arg-type]


def subspace_loss(
    pred_flat: torch.Tensor,
    atoms_per_graph: CountsLike,
    targets: EigenTargets,
    dist: str = "mae",
) -> torch.Tensor:
    """Subspace ("eigen") loss: per structure ``D = V_kᵀ Ĥ V_k − diag(Λ_k)``, then the mean.

    Batched by zero-padding Ĥ to [B, 3Nmax, 3Nmax]; padded rows/columns of ``V`` are zero so
    padding contributes nothing. ``targets`` are constants (no gradient through eigh).
    With k = 3N and ``dist="frosq"`` the per-structure term equals ‖Ĥ − H‖_F² (V orthogonal).

    Args:
        pred_flat: [Σ_g (3N_g)²] predicted Hessian, eV/Å².
        atoms_per_graph: [B] atom counts N_g.
        targets: eigenpairs of the label Hessians (:func:`lowest_eigenpairs`).
        dist: ``"mae"`` mean |D| over the k_g² entries, ``"mse"`` mean D², ``"frosq"`` ‖D‖_F²
            (sum of D²).

    Returns:
        Scalar: mean over structures of ``dist(D_g)`` (eV/Å² for mae, (eV/Å²)² otherwise).
    """
    counts = _counts_tensor(atoms_per_graph, pred_flat.device)
    _flat_segments(counts, pred_flat.numel())
    if targets.num_graphs != counts.numel() or not torch.equal(
        targets.atoms_per_graph.to(counts.device), counts
    ):
        raise ValueError(
            f"eigen targets are for structures of {targets.atoms_per_graph.tolist()} atoms, "
            f"the prediction for {counts.tolist()}"
        )
    h = _pad_flat(pred_flat.reshape(-1), counts)  # [B, M, M]
    v = targets.vectors.to(device=h.device, dtype=h.dtype)
    m = h.shape[-1]
    if v.shape[1] < m:  # targets padded less than this batch
        v = torch.nn.functional.pad(v, (0, 0, 0, m - v.shape[1]))
    v = v[:, :m]
    lam = targets.values.to(device=h.device, dtype=h.dtype)
    d = v.transpose(-1, -2) @ h @ v - torch.diag_embed(lam)  # [B, kmax, kmax]
    mask = targets.mask.to(h.device)
    pair_mask = (mask[:, :, None] & mask[:, None, :]).to(h.dtype)
    n_valid = pair_mask.sum((1, 2)).clamp_min(1.0)
    if dist == "mae":
        per = (d.abs() * pair_mask).sum((1, 2)) / n_valid
    elif dist == "mse":
        per = (d.square() * pair_mask).sum((1, 2)) / n_valid
    elif dist == "frosq":
        per = (d.square() * pair_mask).sum((1, 2))
    else:
        raise ValueError(f"dist must be 'mae', 'mse' or 'frosq', got {dist!r}")
    return per.mean()


@torch.no_grad()
def vibrational_eigenpairs(
    target_flat: torch.Tensor,
    atoms_per_graph: CountsLike,
    positions: torch.Tensor,
    atomic_numbers: torch.Tensor,
    k: int | None = 4,
) -> EigenTargets:
    """The k lowest vibrational eigenpairs of each label Hessian, as subspace-loss targets.

    Per structure: mass-weight the (symmetrised) label Hessian, ``M^-1/2 H M^-1/2`` (masses from
    ``ase.data.atomic_masses``), restrict it to the vibrational subspace of
    :func:`hip_head.vibrations.eckart_projector` (3N − 6 modes, 3N − 5 linear) and keep its k
    lowest eigenpairs (λ_i, q_i). The stored vectors are ``u_i = M^-1/2 q_i``, so that
    :func:`subspace_loss` computes ``u_iᵀ Ĥ u_j = q_iᵀ (M^-1/2 Ĥ M^-1/2) q_j``: the predicted
    Hessian in the label's own normal-mode basis, compared with ``diag(λ)``. These are the
    eigenvalues whose signs give the saddle index (the same ones :func:`hessian_metrics` reports
    as ``eckart_*``); the vectors are M-orthonormal, not orthonormal.

    Args:
        target_flat: [Σ_g (3N_g)²] label Hessian, eV/Å².
        atoms_per_graph: [B] atom counts N_g.
        positions: [Σ_g N_g, 3] positions of the batch, Å.
        atomic_numbers: [Σ_g N_g] atomic numbers.
        k: modes kept per structure, k_g = min(k, number of vibrational modes); ``None`` keeps
            all of them.

    Returns:
        :class:`EigenTargets` with ``values`` in eV/Å²/amu and ``vectors`` in amu^-1/2.
    """
    target_flat = target_flat.detach().reshape(-1)
    counts = _counts_tensor(atoms_per_graph, target_flat.device)
    count_list = counts.tolist()
    blocks = split_flat(target_flat.cpu().to(torch.float64), count_list)
    pos = positions.detach().cpu().to(torch.float64).numpy().reshape(-1, 3)
    z = atomic_numbers.detach().cpu().numpy().reshape(-1).astype(int)
    if pos.shape[0] != sum(count_list) or z.shape[0] != sum(count_list):
        raise ValueError(
            f"positions/atomic_numbers hold {pos.shape[0]}/{z.shape[0]} atoms, the Hessians "
            f"{sum(count_list)}"
        )
    pairs = []
    start = 0
    for g, n in enumerate(count_list):
        masses = atomic_masses[z[start : start + n]]
        proj = eckart_projector(pos[start : start + n], masses)
        start += n
        pw, qw = np.linalg.eigh(proj)
        basis = qw[:, pw > 0.5]  # [3N, M] orthonormal vibrational basis (mass-weighted)
        inv_sqrt_m = 1.0 / np.sqrt(np.repeat(masses, 3))
        h = blocks[g].numpy()
        h = 0.5 * (h + h.T) * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
        values, modes = np.linalg.eigh(_sym(basis.T @ h @ basis))
        kg = values.shape[0] if k is None else min(int(k), values.shape[0])
        vectors = inv_sqrt_m[:, None] * (basis @ modes[:, :kg])
        pairs.append(
            (
                torch.as_tensor(values[:kg], dtype=target_flat.dtype, device=target_flat.device),
                torch.as_tensor(vectors, dtype=target_flat.dtype, device=target_flat.device),
            )
        )
    if not pairs:
        z0 = target_flat.new_zeros
        return EigenTargets(z0(0, 0), z0(0, 0, 0), torch.zeros(0, 0, dtype=torch.bool), counts)
    return EigenTargets._from_pairs(pairs, counts)


# ------------------------------------------------------------------------------ total loss
@dataclass
class LossWeights:
    """Weights and options of :func:`total_loss` (upstream default E 1 : F 25 : H 10).

    Attributes:
        energy: weight of the energy MAE/MSE.
        forces: weight of the force term.
        hessian: weight of the entrywise Hessian term.
        subspace: weight of the subspace (eigen) term; 0 turns it off.
        subspace_k: number of lowest label eigenpairs in the subspace term (None: all 3N).
        energy_kind: ``"mae"`` or ``"mse"`` for energies.
        forces_kind: ``"mae"`` or ``"mse"`` for forces.
        energy_per_atom: compare energies per atom.
        hessian_kind: ``"mae"`` or ``"mse"``.
        hessian_normalization: ``"entry"`` (upstream) or ``"molecule"``.
        subspace_dist: ``"mae"``, ``"mse"`` or ``"frosq"``.
        subspace_basis: ``"cartesian"`` (the lowest eigenpairs of the raw label Hessian,
            eV/Å²) or ``"vibrational"`` (of the mass-weighted, Eckart-projected label Hessian,
            eV/Å²/amu; :func:`vibrational_eigenpairs`; needs positions and atomic numbers).
    """

    energy: float = 1.0
    forces: float = 25.0
    hessian: float = 10.0
    subspace: float = 0.0
    subspace_k: int | None = 8
    hessian_kind: str = "mae"
    hessian_normalization: str = "entry"
    subspace_dist: str = "mae"
    subspace_basis: str = "cartesian"
    energy_kind: str = "mae"
    forces_kind: str = "mae"
    energy_per_atom: bool = False


def _require(pred: dict, target: dict, key: str, term: str, weight: float) -> None:
    for name, d in (("target", target), ("pred", pred)):
        if key not in d or d[key] is None:
            raise MissingLabelError(
                f"the {term} loss has weight {weight} > 0 but {name}[{key!r}] is missing; "
                f"provide {key!r} or set LossWeights.{term}=0"
            )


def total_loss(
    pred: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    atoms_per_graph: CountsLike,
    weights: LossWeights | None = None,
    eigen_targets: EigenTargets | None = None,
    positions: torch.Tensor | None = None,
    atomic_numbers: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the energy, force, entrywise Hessian and subspace terms.

    Terms with weight 0 are skipped (their labels may be absent).

    Args:
        pred: model outputs: ``"energy"`` [B] eV, ``"forces"`` [N, 3] eV/Å, ``"hessian"``
            [Σ_g (3N_g)²] eV/Å² (flat).
        target: labels with the same keys and shapes.
        atoms_per_graph: [B] atom counts N_g.
        weights: :class:`LossWeights` (default: E 1, F 25, H 10, subspace 0).
        eigen_targets: precomputed label eigenpairs for the subspace term; computed from
            ``target["hessian"]`` (k = ``weights.subspace_k``, in ``weights.subspace_basis``)
            when None.
        positions: [N, 3] positions, Å (needed by the ``"vibrational"`` subspace basis).
        atomic_numbers: [N] atomic numbers (likewise).

    Returns:
        (total scalar with grad, dict of detached components ``"energy"``, ``"forces"``,
        ``"hessian"``, ``"subspace"`` (unweighted, only those computed) and ``"total"``).

    Raises:
        MissingLabelError: a term has weight > 0 but its label (or prediction) is missing.
    """
    w = weights if weights is not None else LossWeights()
    terms: dict[str, tuple[float, torch.Tensor]] = {}
    if w.energy > 0:
        _require(pred, target, "energy", "energy", w.energy)
        terms["energy"] = (
            w.energy,
            energy_loss(
                pred["energy"], target["energy"], w.energy_kind, w.energy_per_atom, atoms_per_graph
            ),
        )
    if w.forces > 0:
        _require(pred, target, "forces", "forces", w.forces)
        terms["forces"] = (w.forces, forces_loss(pred["forces"], target["forces"], w.forces_kind))
    if w.hessian > 0:
        _require(pred, target, "hessian", "hessian", w.hessian)
        terms["hessian"] = (
            w.hessian,
            hessian_loss(
                pred["hessian"],
                target["hessian"],
                atoms_per_graph,
                w.hessian_kind,
                w.hessian_normalization,
            ),
        )
    if w.subspace > 0:
        if eigen_targets is None:
            _require(pred, target, "hessian", "subspace", w.subspace)
            if w.subspace_basis == "vibrational":
                if positions is None or atomic_numbers is None:
                    raise ValueError(
                        "the vibrational subspace basis needs positions and atomic_numbers"
                    )
                eigen_targets = vibrational_eigenpairs(
                    target["hessian"], atoms_per_graph, positions, atomic_numbers, w.subspace_k
                )
            elif w.subspace_basis == "cartesian":
                eigen_targets = lowest_eigenpairs(target["hessian"], atoms_per_graph, w.subspace_k)
            else:
                raise ValueError(
                    f"subspace_basis must be 'cartesian' or 'vibrational', got {w.subspace_basis!r}"
                )
        elif pred.get("hessian") is None:
            _require(pred, {"hessian": True}, "hessian", "subspace", w.subspace)
        terms["subspace"] = (
            w.subspace,
            subspace_loss(pred["hessian"], atoms_per_graph, eigen_targets, w.subspace_dist),
        )
    if not terms:
        raise ValueError("every loss weight is 0: nothing to train")
    total = sum(weight * value for weight, value in terms.values())
    components = {name: value.detach() for name, (_, value) in terms.items()}
    components["total"] = total.detach()
    return total, components


# ---------------------------------------------------------------------------------- metrics
def _abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(abs(a @ b) / (na * nb))


@torch.no_grad()
def hessian_metrics(
    pred_flat: torch.Tensor,
    target_flat: torch.Tensor,
    atoms_per_graph: CountsLike,
    positions: torch.Tensor,
    atomic_numbers: torch.Tensor,
    ptr: torch.Tensor | None = None,
    raw_negative_threshold: float = RAW_NEGATIVE_THRESHOLD,
    eckart_negative_threshold: float = ECKART_NEGATIVE_THRESHOLD,
) -> dict[str, float]:
    """Validation metrics of HIP/HORM (no grad; numpy float64 on CPU, one structure at a time).

    Both Hessians are symmetrised before diagonalisation. The Eckart variant mass-weights
    (``M^-1/2 H M^-1/2``, masses from ``ase.data.atomic_masses``) and restricts to the range of
    :func:`hip_head.vibrations.eckart_projector` (3N − 6 values, 3N − 5 linear).

    Args:
        pred_flat: [Σ_g (3N_g)²] predicted Hessian, eV/Å².
        target_flat: [Σ_g (3N_g)²] label Hessian, eV/Å².
        atoms_per_graph: [B] atom counts N_g.
        positions: [N, 3] positions of the whole batch, Å.
        atomic_numbers: [N] atomic numbers.
        ptr: [B + 1] first atom of each structure in ``positions`` (default: cumulative N_g).
        raw_negative_threshold: raw eigenvalues below minus this (eV/Å²) count as negative.
        eckart_negative_threshold: Eckart eigenvalues below minus this (eV/Å²/amu) count as
            negative (default: HIP's −1e-6 Hartree/Bohr²/amu).

    Returns:
        Means over structures: ``hessian_mae`` (eV/Å², entries then structures),
        ``eigval_mae`` (all raw eigenvalues, eV/Å²), ``eigval1_mae`` (lowest), ``eigvec1_cos``
        (|cos| of the lowest eigenvectors), ``n_neg_agree`` (fraction of structures whose count
        of negative raw eigenvalues matches), and the Eckart ``eckart_eigval_mae``,
        ``eckart_eigval1_mae`` (eV/Å²/amu), ``eckart_eigvec1_cos``, ``eckart_n_neg_agree``,
        ``eckart_is_ts_agree`` (n_neg == 1 agrees); plus ``num_structures``.
    """
    counts = _counts_tensor(atoms_per_graph, torch.device("cpu")).tolist()
    preds = split_flat(pred_flat.detach().cpu().to(torch.float64), counts)
    targets = split_flat(target_flat.detach().cpu().to(torch.float64), counts)
    pos = positions.detach().cpu().to(torch.float64).numpy().reshape(-1, 3)
    z = atomic_numbers.detach().cpu().numpy().reshape(-1).astype(int)
    if ptr is None:
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    else:
        starts = ptr.detach().cpu().numpy().reshape(-1).astype(int)
    rows: dict[str, list[float]] = {
        k: []
        for k in (
            "hessian_mae",
            "eigval_mae",
            "eigval1_mae",
            "eigvec1_cos",
            "n_neg_agree",
            "eckart_eigval_mae",
            "eckart_eigval1_mae",
            "eckart_eigvec1_cos",
            "eckart_n_neg_agree",
            "eckart_is_ts_agree",
        )
    }
    for g, n in enumerate(counts):
        hp, ht = preds[g].numpy(), targets[g].numpy()
        hp, ht = 0.5 * (hp + hp.T), 0.5 * (ht + ht.T)
        rows["hessian_mae"].append(float(np.mean(np.abs(preds[g].numpy() - targets[g].numpy()))))
        lp, vp = np.linalg.eigh(hp)
        lt, vt = np.linalg.eigh(ht)
        rows["eigval_mae"].append(float(np.mean(np.abs(lp - lt))))
        rows["eigval1_mae"].append(float(abs(lp[0] - lt[0])))
        rows["eigvec1_cos"].append(_abs_cos(vp[:, 0], vt[:, 0]))
        neg_p = int(np.sum(lp < -raw_negative_threshold))
        neg_t = int(np.sum(lt < -raw_negative_threshold))
        rows["n_neg_agree"].append(float(neg_p == neg_t))

        a0 = int(starts[g])
        masses = atomic_masses[z[a0 : a0 + n]]
        proj = eckart_projector(pos[a0 : a0 + n], masses)
        pw, qw = np.linalg.eigh(proj)
        basis = qw[:, pw > 0.5]  # orthonormal basis of the vibrational subspace [3N, M]
        inv_sqrt_m = 1.0 / np.sqrt(np.repeat(masses, 3))
        scale = inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
        if basis.shape[1] == 0:
            continue
        ep, evp = np.linalg.eigh(_sym(basis.T @ (hp * scale) @ basis))
        et, evt = np.linalg.eigh(_sym(basis.T @ (ht * scale) @ basis))
        rows["eckart_eigval_mae"].append(float(np.mean(np.abs(ep - et))))
        rows["eckart_eigval1_mae"].append(float(abs(ep[0] - et[0])))
        rows["eckart_eigvec1_cos"].append(_abs_cos(basis @ evp[:, 0], basis @ evt[:, 0]))
        neg_p = int(np.sum(ep < -eckart_negative_threshold))
        neg_t = int(np.sum(et < -eckart_negative_threshold))
        rows["eckart_n_neg_agree"].append(float(neg_p == neg_t))
        rows["eckart_is_ts_agree"].append(float((neg_p == 1) == (neg_t == 1)))
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in rows.items()}
    out["num_structures"] = float(len(counts))
    return out


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)
