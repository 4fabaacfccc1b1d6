"""Evaluation plans of the Hessian head: index tables and Wigner-3j factors that let
:class:`~hip_head.readout.HessianReadout` evaluate its e3nn tensor products path by path,
with the linear output maps folded in (see the module docs of :mod:`hip_head.readout`).

Plans are derived from a head's module structure and cached outside the modules, so nothing
here is saved, pickled or compared with a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from hip_head._e3nn import o3


def _channelwise_tensor_product(irreps1, irreps2, lmax: int, mode: str):
    """Channel-wise tensor product (``mode`` 'uvu' or 'uuu'), outputs restricted to l <= lmax.

    'uvu': features x spherical harmonics (each channel of ``irreps1`` times each harmonic);
    'uuu': two features with the same multiplicities, channel by channel.
    """
    irreps_out, instructions = [], []
    for i, (mul, ir1) in enumerate(irreps1):
        for j, (_, ir2) in enumerate(irreps2):
            for ir_out in ir1 * ir2:
                if ir_out.l <= lmax:
                    instructions.append((i, j, len(irreps_out), mode, True))
                    irreps_out.append((mul, ir_out))
    return _sorted_tensor_product(irreps1, irreps2, irreps_out, instructions)


def _sorted_tensor_product(irreps1, irreps2, irreps_out, instructions):
    irreps_out = o3().Irreps(irreps_out)
    irreps_out, permutation, _ = irreps_out.sort()
    instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
    return o3().TensorProduct(
        irreps1,
        irreps2,
        irreps_out,
        instructions,
        shared_weights=False,
        internal_weights=False,
    )


def _scalar_mask(irreps) -> torch.Tensor:
    """[dim] bool mask of the ``0e`` components of ``irreps``."""
    mask = torch.zeros(irreps.dim, dtype=torch.bool)
    for (_, ir), sl in zip(irreps, irreps.slices()):
        if ir.l == 0 and ir.p == 1:
            mask[sl] = True
    return mask


# ----------------------------------------------------------------------------- evaluation plans
def _weight_offsets(instructions) -> list[int]:
    """Start of each instruction's weights in a flat e3nn weight vector."""
    offsets, total = [], 0
    for ins in instructions:
        offsets.append(total)
        total += math.prod(ins.path_shape) if getattr(ins, "has_weight", True) else 0
    return offsets


def _wigner_3j(l1: int, l2: int, l3: int) -> torch.Tensor:
    """[2l1+1, 2l2+1, 2l3+1] float64 Wigner-3j symbol, the one e3nn's tensor products use."""
    return o3().wigner_3j(l1, l2, l3, dtype=torch.float64)


def _convert(value: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """A plan's tensors on ``device``; floating ones in ``dtype`` (from their float64 values)."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype if value.is_floating_point() else None)
    if isinstance(value, (list, tuple)):
        return type(value)(_convert(v, dtype, device) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return replace(
            value,
            **{k: _convert(getattr(value, k), dtype, device) for k in value.__dataclass_fields__},
        )
    return value


@dataclass
class _MessageGroup:
    """The used paths of an interaction's 'uvu' product that share their feature block.

    For these paths, messages are ``bmm(h_b[u, m1], T[m1, col]) * w[u, path(col)]`` with
    ``T = Y_ab @ harmonics`` (one batched matrix product per group) and the weights ``w``
    computed directly in the expanded (u, col) layout by the MLP's last layer.

    Attributes:
        features: columns of h read (one irrep block, ``mul`` channels of ``dim`` components).
        mul: channels of that block.
        dim: its irrep dimension (2l + 1).
        width: Σ over the group's paths of their output dimension.
        harmonics: [sh_dim, dim * width] path weight x Wigner-3j, per harmonic component.
        weight_rows: [mul * width] long, row of the radial MLP's last layer for (u, col).
        destination: [mul * width] long, column of the product's output (e3nn layout).
    """

    features: slice
    mul: int
    dim: int
    width: int
    harmonics: torch.Tensor
    weight_rows: torch.Tensor
    destination: torch.Tensor


@dataclass
class _MessagePlan:
    """How one :class:`PairInteraction` is evaluated: the paths its linear map reads.

    Attributes:
        groups: the used paths, grouped by feature block.
        out_dim: dimension of the product's full output (the linear map's input).
    """

    groups: list[_MessageGroup]
    out_dim: int


@dataclass
class _ProductGroup:
    """Rows of the folded final products that share their inputs.

    A row is one (tensor-product path, output irrep block component of ``pair_out`` /
    ``node_pair_out``); its per-pair channel coefficients c[row, u] come from the folded MLP.
    'uvu' groups: ``q = bmm(c, h[u, m1])``, then ``q ⊗ Y`` per path; 'uuu' groups:
    ``q = bmm(c, h_a[u, m1] h_b[u, m2])``.

    Attributes:
        channelwise: True for the 'uuu' product h_a ⊙ h_b, False for h ⊗ Y.
        atom: 0 if the first input is atom a's features, 1 if atom b's.
        first: columns of h of the first input block.
        mul: its channels.
        dim1: its irrep dimension.
        second: columns of h of the second input block (channel-wise products only).
        dim2: dimension of the second input (channel-wise products only).
        columns: columns of the folded coefficient matrix (rows x mul).
        rows: number of rows.
        parts: 'uvu' only: (rows of one path within the group, its harmonic components).
    """

    channelwise: bool
    atom: int
    first: slice
    mul: int
    dim1: int
    second: slice | None
    dim2: int
    columns: slice
    rows: int
    parts: list[tuple[slice, slice]] = field(default_factory=list)


@dataclass
class _ReadoutPlan:
    """How the final products and ``pair_out`` / ``node_pair_out`` are evaluated together.

    Attributes:
        weight_rows: [R * mul] long, row of ``pair_radial``'s last layer for (row, u).
        linear_index: [R * mul] long, entry of the concatenated linear weights for (row, u).
        linear_scale: [R * mul] the linear maps' path weights for (row, u).
        groups: the rows, grouped by inputs.
        blocks: [F, out_dim] Wigner-3j x path weights from the features ``q ⊗ Y`` / ``q`` to
            the outputs (``pair_out``'s 9 components, then ``node_pair_out``'s 6).
        out_dim: 15 (``diagonal="learned"``) or 9 (``"sum_rule"``).
    """

    weight_rows: torch.Tensor
    linear_index: torch.Tensor
    linear_scale: torch.Tensor
    groups: list[_ProductGroup]
    blocks: torch.Tensor
    out_dim: int


def _message_plan(tp, linear, irreps_sh) -> _MessagePlan:
    """The evaluation plan of an interaction's product ``tp`` read by ``linear``."""
    used = {ins.i_in for ins in linear.instructions}
    offsets = _weight_offsets(tp.instructions)
    sh_slices = irreps_sh.slices()
    out_slices = tp.irreps_out.slices()
    members: dict[int, list[tuple[int, Any]]] = {}
    for k, ins in enumerate(tp.instructions):
        if ins.i_out in used:
            if ins.connection_mode != "uvu" or tp.irreps_in2[ins.i_in2].mul != 1:
                raise NotImplementedError("interaction products are 'uvu' with harmonics")
            members.setdefault(ins.i_in1, []).append((k, ins))
    groups = []
    in1_slices = tp.irreps_in1.slices()
    for i1, paths in members.items():
        mul, ir1 = tp.irreps_in1[i1]
        width = sum(tp.irreps_out[ins.i_out].ir.dim for _, ins in paths)
        harmonics = torch.zeros(irreps_sh.dim, ir1.dim, width, dtype=torch.float64)
        weight_rows = torch.empty(mul, width, dtype=torch.long)
        destination = torch.empty(mul, width, dtype=torch.long)
        channels = torch.arange(mul)
        col = 0
        for k, ins in paths:
            ir2, ir_out = tp.irreps_in2[ins.i_in2].ir, tp.irreps_out[ins.i_out].ir
            w3j = _wigner_3j(ir1.l, ir2.l, ir_out.l)  # [m1, m2, mo]
            cols = slice(col, col + ir_out.dim)
            harmonics[sh_slices[ins.i_in2], :, cols] = ins.path_weight * w3j.permute(1, 0, 2)
            weight_rows[:, cols] = (offsets[k] + channels)[:, None]  # path_shape (mul, 1)
            start = out_slices[ins.i_out].start
            destination[:, cols] = (
                start + channels[:, None] * ir_out.dim + torch.arange(ir_out.dim)[None, :]
            )
            col += ir_out.dim
        groups.append(
            _MessageGroup(
                features=in1_slices[i1],
                mul=mul,
                dim=ir1.dim,
                width=width,
                harmonics=harmonics.reshape(irreps_sh.dim, ir1.dim * width),
                weight_rows=weight_rows.reshape(-1),
                destination=destination.reshape(-1),
            )
        )
    return _MessagePlan(
        groups=groups,
        out_dim=tp.irreps_out.dim,
    )


def _readers(targets, block: int) -> list[tuple[int, int, int, float, int]]:
    """The output channels of the linear maps ``targets`` that read input block ``block``.

    Returns:
        Per output channel w: (start of its instruction's weights in the concatenated
        weights, the instruction's output channels, w, its path weight, its first output
        column).
    """
    readers = []
    for linear, column_start, linear_start in targets:
        offsets = _weight_offsets(linear.instructions)
        out_slices = linear.irreps_out.slices()
        for j, lin in enumerate(linear.instructions):
            if lin.i_in != block:
                continue
            mul_out, dim = lin.path_shape[1], linear.irreps_out[lin.i_out].ir.dim
            for w in range(mul_out):
                column = column_start + out_slices[lin.i_out].start + w * dim
                readers.append((linear_start + offsets[j], mul_out, w, lin.path_weight, column))
    return readers


def _readout_plan(products, targets, irreps_sh) -> _ReadoutPlan:
    """The evaluation plan of the final products folded with the linear maps that read them.

    Args:
        products: ``(tp, atom, channelwise, weight_start, block_start)`` per product: the
            product, which atom's features are its first input (0: a, 1: b), whether it is
            the channel-wise h_a ⊙ h_b, where its weights start in the MLP output and where
            its output blocks start in the linear maps' input irreps.
        targets: ``(linear, column_start, weight_start)`` per linear map reading the
            concatenated products: where its outputs start, and its weights in the
            concatenation of the maps' weights.
        irreps_sh: the spherical-harmonic irreps (the 'uvu' products' second input).
    """
    sh_slices = irreps_sh.slices()
    weight_rows: list[int] = []
    linear_index: list[int] = []
    linear_scale: list[float] = []
    row_blocks: list[tuple[torch.Tensor, int]] = []  # per row: (path weight x 3j, column)
    groups = []
    for tp, atom, channelwise, weight_start, block_start in products:
        expected = "uuu" if channelwise else "uvu"
        if any(i.connection_mode != expected or not i.has_weight for i in tp.instructions):
            raise NotImplementedError(f"final products are weighted {expected!r} products")
        offsets = _weight_offsets(tp.instructions)
        members: dict[tuple[int, int], list[tuple[int, Any]]] = {}
        for k, ins in enumerate(tp.instructions):
            members.setdefault((ins.i_in1, ins.i_in2 if channelwise else -1), []).append((k, ins))
        for (i1, i2), paths in members.items():
            mul, ir1 = tp.irreps_in1[i1]
            start_column, group_rows, parts = len(weight_rows), 0, []
            for k, ins in paths:
                ir2, ir_out = tp.irreps_in2[ins.i_in2].ir, tp.irreps_out[ins.i_out].ir
                w3j = ins.path_weight * _wigner_3j(ir1.l, ir2.l, ir_out.l)
                readers = _readers(targets, block_start + ins.i_out)
                for linear_start, mul_out, w, path_weight, column in readers:
                    # channel u of the path: weight u (shape (mul, 1) or (mul,)), W_lin[u, w]
                    weight_rows.extend(weight_start + offsets[k] + u for u in range(mul))
                    linear_index.extend(linear_start + u * mul_out + w for u in range(mul))
                    linear_scale.extend([path_weight] * mul)
                    row_blocks.append((w3j, column))
                if readers and not channelwise:
                    rows = slice(group_rows, group_rows + len(readers))
                    parts.append((rows, sh_slices[ins.i_in2]))
                group_rows += len(readers)
            if group_rows:
                groups.append(
                    _ProductGroup(
                        channelwise=channelwise,
                        atom=atom,
                        first=tp.irreps_in1.slices()[i1],
                        mul=mul,
                        dim1=ir1.dim,
                        second=tp.irreps_in2.slices()[i2] if channelwise else None,
                        dim2=tp.irreps_in2[i2].ir.dim if channelwise else 0,
                        columns=slice(start_column, len(weight_rows)),
                        rows=group_rows,
                        parts=parts,
                    )
                )
    out_dim = sum(linear.irreps_out.dim for linear, _, _ in targets)
    pieces = []
    for w3j, column in row_blocks:  # features are ordered (row, m1, m2), rows in plan order
        d1, d2, d_out = w3j.shape
        piece = torch.zeros(d1 * d2, out_dim, dtype=torch.float64)
        piece[:, column : column + d_out] = w3j.reshape(d1 * d2, d_out)
        pieces.append(piece)
    return _ReadoutPlan(
        weight_rows=torch.tensor(weight_rows, dtype=torch.long),
        linear_index=torch.tensor(linear_index, dtype=torch.long),
        linear_scale=torch.tensor(linear_scale, dtype=torch.float64),
        groups=groups,
        blocks=torch.cat(pieces) if pieces else torch.zeros(0, out_dim, dtype=torch.float64),
        out_dim=out_dim,
    )
