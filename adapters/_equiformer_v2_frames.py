"""Differentiable edge frames for fairchem-core 1.x EquiformerV2 (used by its adapter).

fairchem 1.x ``detach()``-es both its edge frames (``init_edge_rot_mat``) and the Wigner-D
matrices built from them (``SO3_Rotation.set_wigner``), so autograd through the bare model gives
only the distance part of dE/dr. :func:`edge_frames` returns fairchem's own frame (value unchanged,
bit for bit) carrying the derivative of a smooth frame with the same edge axis;
:func:`set_wigner` (bound to a view's ``SO3_Rotation``) differentiates the Wigner matrix of a
rotation R as D(R) = D(R R0ᵀ R1) D(R1)ᵀ D(R0) (R0 = R held fixed, R1 a fixed generic rotation),
which avoids the gimbal-lock singularity of fairchem's Euler angles (an edge along ±y) and is
exact to all orders.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from hip_head._e3nn import o3

from .base import import_backbone

__all__ = ["PACKAGE", "edge_frames", "import_fairchem", "set_wigner"]

#: fairchem-core 1.x's EquiformerV2 package.
PACKAGE = "fairchem.core.models.equiformer_v2"

#: A fixed rotation far from the Euler-angle singularity (beta = 0, pi) of fairchem's Wigner-D.
_GENERIC_ANGLES = (0.3, 1.2, -0.7)


def import_fairchem(module: str) -> types.ModuleType:
    """Import ``module`` from fairchem-core 1.x, or raise a :class:`MissingBackboneError`."""
    return import_backbone(module, "fairchem-core 1.x", "eqv2")


def _wigner_blocks(rotation: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """fairchem's Wigner-D blocks of rotations, differentiable and in their dtype.

    The computation of ``SO3_Rotation.RotationToWignerDMatrix`` (Euler angles in e3nn's
    convention, then e3nn 0.4's ``wigner_D``) without its ``detach()`` and default-dtype buffer.

    Args:
        rotation: [E, 3, 3] rotation matrices (fairchem's edge frames).
        lmax: largest l.

    Returns:
        lmax + 1 tensors [E, 2l+1, 2l+1].
    """
    wigner_d = import_fairchem(f"{PACKAGE}.wigner").wigner_D
    axis = rotation @ rotation.new_tensor([0.0, 1.0, 0.0])
    alpha, beta = o3().xyz_to_angles(axis)
    rest = o3().angles_to_matrix(alpha, beta, torch.zeros_like(alpha)).transpose(-1, -2) @ rotation
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return [wigner_d(l, alpha, beta, gamma) for l in range(lmax + 1)]


def _block_diagonal(blocks: list[torch.Tensor]) -> torch.Tensor:
    """[E, Σ(2l+1), Σ(2l+1)] block-diagonal matrices from per-l blocks [E, 2l+1, 2l+1]."""
    size = sum(b.shape[-1] for b in blocks)
    first = blocks[0]
    out = first.new_zeros(first.shape[0], size, size)
    start = 0
    for block in blocks:
        end = start + block.shape[-1]
        out[:, start:end, start:end] = block
        start = end
    return out


def _differentiable_wigner(rotation: torch.Tensor, lmax: int) -> torch.Tensor:
    """Wigner-D matrices [E, (lmax+1)^2, (lmax+1)^2] of ``rotation`` with their derivative.

    The value is fairchem's (from the detached rotation R0, bit for bit). The derivative is that
    of D(R) = D(R R0ᵀ R1) D(R1)ᵀ D(R0): R R0ᵀ = I in value, so D is evaluated at the generic R1,
    never at the Euler-angle singularity an edge along ±y would give.
    """
    fixed = rotation.detach()
    value = _block_diagonal(_wigner_blocks(fixed, lmax))
    if not rotation.requires_grad:
        return value
    r1 = o3().angles_to_matrix(*(rotation.new_tensor(a) for a in _GENERIC_ANGLES))
    moving = _wigner_blocks(rotation @ fixed.transpose(1, 2) @ r1, lmax)
    pivot = _wigner_blocks(r1.unsqueeze(0), lmax)
    lifted = _block_diagonal([m @ p.transpose(-1, -2) for m, p in zip(moving, pivot)]) @ value
    return value + (lifted - lifted.detach())


def set_wigner(self: nn.Module, rot_mat3x3: torch.Tensor) -> None:
    """``SO3_Rotation.set_wigner`` keeping the gradient (bound to the view's copies)."""
    self.device, self.dtype = rot_mat3x3.device, rot_mat3x3.dtype
    self.wigner = _differentiable_wigner(rot_mat3x3, self.lmax)
    self.wigner_inv = torch.transpose(self.wigner, 1, 2).contiguous()


def edge_frames(data: Any, edge_index: torch.Tensor, edge_vec: torch.Tensor) -> torch.Tensor:
    """fairchem's edge frames [E, 3, 3] (value unchanged) with the derivative of a smooth frame.

    fairchem's ``init_edge_rot_mat`` returns detached rows (z, x, -y) with x = the edge direction
    and z perpendicular to it through a random vector. The derivative attached is that of the
    frame (z', x, -x × z') with z' = z held fixed and re-orthogonalised to the moving edge
    direction: a rotation about the edge axis, to which the model is invariant, does not change
    the energy, so any such smooth frame gives the exact dE/dr.
    """
    if edge_vec.shape[0] == 0:  # fairchem's init_edge_rot_mat fails on an empty edge list
        return edge_vec.new_zeros(0, 3, 3)
    frames = import_fairchem(f"{PACKAGE}.edge_rot_mat").init_edge_rot_mat(edge_vec)
    if not edge_vec.requires_grad:
        return frames
    x = edge_vec / edge_vec.norm(dim=-1, keepdim=True)
    z = frames[:, 0]
    z = z - (z * x).sum(-1, keepdim=True) * x
    z = z / z.norm(dim=-1, keepdim=True)
    moving = torch.stack([z, x, -torch.cross(x, z, dim=-1)], dim=1)
    return frames + (moving - moving.detach())
