"""Label eigenpairs and the subspace ("eigen") loss (pure torch, no Lightning).

The subspace loss compares a predicted Hessian Ĥ with the label H in the span of H's lowest
eigenvectors: per structure ``D = V_kᵀ Ĥ V_k − diag(Λ_k)``. The eigenpairs come from the raw
Cartesian label (:func:`lowest_eigenpairs`, eV/Å², upstream HIP) or from its mass-weighted,
Eckart-projected form (:func:`vibrational_eigenpairs`, eV/Å²/amu: the modes whose sign sets the
saddle index). Hessians are in the flat batch layout of :mod:`hip_head.finetune.flat_layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase.data import atomic_masses

from hip_head.assemble import split_flat
from hip_head.errors import InvalidArgumentError
from hip_head.finetune.flat_layout import (
    CountsLike,
    _counts_tensor,
    _flat_segments,
    _pad_flat,
    _sym,
)
from hip_head.vibrations import eckart_projector

__all__ = [
    "EigenTargets",
    "check_mode_sign_options",
    "lowest_eigenpairs",
    "mode_sign_loss",
    "subspace_loss",
    "vibrational_eigenpairs",
]


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


def _padded_pair(
    pred_flat: torch.Tensor, counts: torch.Tensor, targets: EigenTargets
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prediction padded to [B, M, M] and the target vectors padded to [B, M, kmax]."""
    if targets.num_graphs != counts.numel() or not torch.equal(
        targets.atoms_per_graph.to(counts.device), counts
    ):
        raise InvalidArgumentError(
            f"eigen targets are for structures of {targets.atoms_per_graph.tolist()} atoms, "
            f"the prediction for {counts.tolist()}"
        )
    h = _pad_flat(pred_flat.reshape(-1), counts)  # [B, M, M]
    v = targets.vectors.to(device=h.device, dtype=h.dtype)
    m = h.shape[-1]
    if v.shape[1] < m:
        v = torch.nn.functional.pad(v, (0, 0, 0, m - v.shape[1]))
    return h, v[:, :m]


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
    h, v = _padded_pair(pred_flat, counts, targets)
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
        raise InvalidArgumentError(f"dist must be 'mae', 'mse' or 'frosq', got {dist!r}")
    return per.mean()


def check_mode_sign_options(
    k: int, margin: float, floor: float, kind: str = "hinge", gap: float = 0.0
) -> None:
    """Raise :class:`InvalidArgumentError` unless the options of :func:`mode_sign_loss` are
    valid: k an integer ≥ 1, margin ≥ 0, floor > 0, gap ≥ 0, kind ``"hinge"`` or ``"mae"``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidArgumentError(f"k must be an integer >= 1, got {k!r}")
    if not margin >= 0 or not floor > 0 or not gap >= 0:
        raise InvalidArgumentError(
            f"need margin >= 0, floor > 0 and gap >= 0 (eV/Å²/amu), got {margin}, {floor}, {gap}"
        )
    if kind not in ("hinge", "mae"):
        raise InvalidArgumentError(f"kind must be 'hinge' or 'mae', got {kind!r}")


def mode_sign_loss(
    pred_flat: torch.Tensor,
    atoms_per_graph: CountsLike,
    targets: EigenTargets,
    k: int = 4,
    margin: float = 0.5,
    floor: float = 0.1,
    kind: str = "hinge",
    gap: float = 0.0,
) -> torch.Tensor:
    """The prediction's k lowest eigenvalues in the label's mode space against the label's.

    ``targets`` hold *all* the label's eigenpairs (λ_i, u_i) of one space, e.g. every
    vibrational mode from :func:`vibrational_eigenpairs` with ``k=None``. The prediction is
    expressed in the same space, ``P = Uᵀ Ĥ U`` (similar to Ĥ restricted to that space, so with
    vibrational targets its eigenvalues are the prediction's mass-weighted, Eckart-projected
    ones), and its ascending eigenvalues μ_1 ≤ μ_2 ≤ … are paired with the label's λ_1 ≤ λ_2 ≤ …
    (``torch.linalg.eigvalsh``: gradients through the eigenvalues only, stable at
    degeneracies). Per pair of the k lowest, with s_i = −1 for λ_i < 0 and +1 otherwise:

    * ``kind="hinge"``: ``relu(max(margin·|λ_i|, gap) − s_i·μ_i) / max(|λ_i|, floor)``, zero
      once μ_i has the label's sign and at least ``margin`` of its size (and at least ``gap``
      away from zero: a soft mode of the label, a near-free torsion, then keeps its sign with
      room to spare instead of by a hair). Zero for all k pairs means the same
      count of negative eigenvalues among the k lowest: the saddle index, with neither a missing
      nor a spurious imaginary mode. Dimensionless; a soft mode weighs as much as a stiff one.
    * ``kind="mae"``: ``|μ_i − λ_i|`` in the units of the values (eV/Å²/amu for vibrational
      targets): the lowest-eigenvalue errors themselves.

    Args:
        pred_flat: [Σ_g (3N_g)²] predicted Hessian, eV/Å².
        atoms_per_graph: [B] atom counts N_g.
        targets: all eigenpairs of the labels in one space (``values`` [B, M_max] ascending).
        k: lowest pairs compared per structure (k_g = min(k, M_g)).
        margin: hinge: fraction of |λ_i| required on the label's side of zero (≥ 0).
        floor: hinge: smallest curvature scale, in the units of the values (> 0); keeps
            near-zero modes (soft torsions) from dominating.
        kind: ``"hinge"`` or ``"mae"``.
        gap: hinge: smallest distance from zero required on the label's side, in the units of
            the values (≥ 0; 0: ``margin`` alone).

    Returns:
        Scalar: mean over structures of the mean over their k_g pairs.
    """
    check_mode_sign_options(k, margin, floor, kind, gap)
    counts = _counts_tensor(atoms_per_graph, pred_flat.device)
    _flat_segments(counts, pred_flat.numel())
    if not bool(targets.mask.any()):  # no vibrational modes in the batch (single atoms)
        return pred_flat.sum() * 0.0
    h, v = _padded_pair(pred_flat, counts, targets)
    p = v.transpose(-1, -2) @ h @ v  # [B, M, M] the prediction in the label's mode space
    p = 0.5 * (p + p.transpose(-1, -2))
    mask = targets.mask.to(p.device)
    lam = targets.values.to(device=p.device, dtype=p.dtype)
    # padded modes: a large diagonal sorts them after every real eigenvalue
    big = 1e3 * (1.0 + p.detach().abs().amax() + lam.abs().amax())
    p = p + torch.diag_embed((~mask).to(p.dtype) * big)
    kk = min(k, lam.shape[1])
    mu = torch.linalg.eigvalsh(p)[:, :kk]
    lam, valid = lam[:, :kk], mask[:, :kk].to(p.dtype)
    if kind == "hinge":
        sign = torch.where(lam < 0, -torch.ones_like(lam), torch.ones_like(lam))
        required = (margin * lam.abs()).clamp_min(gap)
        per_pair = torch.relu(required - sign * mu) / lam.abs().clamp_min(floor)
    else:
        per_pair = (mu - lam).abs()
    per = (per_pair * valid).sum(1) / valid.sum(1).clamp_min(1.0)
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
        raise InvalidArgumentError(
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
