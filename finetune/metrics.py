"""Validation metrics of a predicted Hessian against its label (HIP/HORM conventions).

Per structure: entrywise MAE, eigenvalue MAEs (raw and Eckart), the lowest eigenvalue and the
|cos| of the lowest eigenvector, and whether the number of negative (imaginary) modes agrees.
Units: eV/Å² (raw), eV/Å²/amu (Eckart, mass-weighted).
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import atomic_masses

from hip_head.assemble import split_flat
from hip_head.finetune.flat_layout import CountsLike, _counts_tensor, _sym
from hip_head.units import HARTREE_PER_BOHR2_IN_EV_PER_A2
from hip_head.vibrations import HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU, eckart_projector

__all__ = ["ECKART_NEGATIVE_THRESHOLD", "RAW_NEGATIVE_THRESHOLD", "hessian_metrics"]

#: Raw (Cartesian) eigenvalues below minus this many eV/Å² count as negative in
#: :func:`hessian_metrics`.
RAW_NEGATIVE_THRESHOLD: float = 1e-6

#: Eckart eigenvalues below minus this many eV/Å²/amu count as negative: the HIP/HORM
#: −1e-6 Hartree/Bohr²/amu.
ECKART_NEGATIVE_THRESHOLD: float = HIP_NEGATIVE_EIGENVALUE_THRESHOLD_AU * (
    HARTREE_PER_BOHR2_IN_EV_PER_A2
)


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
