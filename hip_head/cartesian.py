"""Irreps (l = 0, 1, 2) <-> Cartesian 3x3 blocks.

A 3x3 block M transforms as R M Rᵀ under a rotation R. Its 9 numbers split into irreps of
O(3): the trace (``0e``), the antisymmetric part (``1e``, a pseudovector) and the symmetric
traceless part (``2e``). The change of basis is the Wigner-3j tensor W3j(1, 1, l) for
l = 0, 1, 2 (the seed's ``irreps_to_cartesian_matrix``), expressed in e3nn's l = 1 basis and
scaled by sqrt(2l + 1) so that the 9x9 change of basis is orthonormal (its inverse is its
transpose, and a unit coefficient gives a unit-norm block for every l).

The l = 1 basis of e3nn is *derived here at run time*, once, from e3nn's own spherical
harmonics, rather than assumed: e3nn 0.4.4 and >= 0.5 both use (x, y, z) today, but if a
version permuted it the matrices below would still be right. Everything else in hip-head calls
:func:`irreps_to_cartesian` / :func:`cartesian_to_irreps`.
"""

from __future__ import annotations

import functools

import torch

from hip_head._e3nn import o3
from hip_head.errors import InvalidArgumentError

#: The irreps of one 3x3 block in the order used by the 9-vectors below.
BLOCK_IRREPS = "1x0e+1x1e+1x2e"
#: The irreps of a symmetric 3x3 block (diagonal blocks): trace and symmetric traceless part.
SYMMETRIC_BLOCK_IRREPS = "1x0e+1x2e"


@functools.lru_cache(maxsize=1)
def _cartesian_to_l1_float64() -> torch.Tensor:
    """[3, 3] matrix P with Y¹(v) ∝ P v: column i is e3nn's l=1 vector of the unit vector e_i."""
    eye = torch.eye(3, dtype=torch.float64)
    y1 = o3().spherical_harmonics(1, eye, normalize=True, normalization="norm")  # [3 (x,y,z), 3]
    return y1.T.contiguous()


@functools.lru_cache(maxsize=1)
def _basis_float64() -> torch.Tensor:
    """[3, 3, 9] tensor B with M_ij = Σ_k B_ijk c_k in Cartesian (x, y, z) indices."""
    p = _cartesian_to_l1_float64()
    # sqrt(2l + 1) makes the 9 columns orthonormal (each W3j has unit Frobenius norm).
    w = torch.cat(
        [(2 * l + 1) ** 0.5 * o3().wigner_3j(1, 1, l, dtype=torch.float64) for l in (0, 1, 2)],
        dim=-1,
    )
    # w is indexed in e3nn's l=1 basis; rotate both l=1 indices to Cartesian: M_cart = Pᵀ M P.
    return torch.einsum("ai,bj,abk->ijk", p, p, w).contiguous()


def cartesian_basis(
    dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The orthonormal change of basis between 9 irrep coefficients and a 3x3 block.

    Args:
        dtype: dtype of the result.
        device: device of the result.

    Returns:
        [3, 3, 9] tensor ``B``; ``M_ij = Σ_k B_ijk c_k``. Reshaped to [9, 9] it is orthogonal,
        so ``c_k = Σ_ij B_ijk M_ij``. Coefficients are ordered l = 0 (1), l = 1 (3), l = 2 (5),
        in e3nn's basis of each l.
    """
    return _basis_float64().to(dtype=dtype, device=device)


def irreps_to_cartesian(irreps: torch.Tensor) -> torch.Tensor:
    """Turn ``0e + 1e + 2e`` coefficients into 3x3 blocks.

    Args:
        irreps: [..., 9] coefficients (l = 0, 1, 2 in e3nn's basis), or [..., 6] for a
            symmetric block (``0e + 2e`` only).

    Returns:
        [..., 3, 3] blocks; rotating the coefficients by e3nn's D(R) rotates the block to
        R M Rᵀ. The l = 0 part is isotropic, l = 1 antisymmetric, l = 2 symmetric traceless.
    """
    basis = cartesian_basis(irreps.dtype, irreps.device)
    if irreps.shape[-1] == 6:
        basis = torch.cat([basis[..., :1], basis[..., 4:]], dim=-1)
    elif irreps.shape[-1] != 9:
        raise InvalidArgumentError(
            f"expected 9 (0e+1e+2e) or 6 (0e+2e) coefficients, got {irreps.shape[-1]}"
        )
    return torch.einsum("ijk,...k->...ij", basis, irreps)


def cartesian_to_irreps(blocks: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`irreps_to_cartesian`.

    Args:
        blocks: [..., 3, 3] Cartesian blocks.

    Returns:
        [..., 9] coefficients ordered l = 0, 1, 2 (exact inverse: the basis is orthonormal).
    """
    if blocks.shape[-2:] != (3, 3):
        raise InvalidArgumentError(f"expected [..., 3, 3] blocks, got shape {tuple(blocks.shape)}")
    basis = cartesian_basis(blocks.dtype, blocks.device)
    return torch.einsum("ijk,...ij->...k", basis, blocks)
