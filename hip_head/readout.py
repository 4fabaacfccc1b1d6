"""The Hessian readout head: node irreps -> symmetric, equivariant 3x3 Hessian blocks.

Data flow for a batch with N atoms and P ordered pairs (a, b) within ``hessian_cutoff`` (the
pair graph of :func:`~hip_head.graph.build_pair_graph`: one radius search, periodic images
included; nothing here is quadratic in N)::

    node_feats [N, irreps_in] --Linear--> h [N, hidden]         (l <= 2, every parity present)
    r_ab --> Y(r̂_ab) [P, 0e+1o+2e],  radial basis x envelope [P, B]
    weights_ab = MLP(basis, scalars(h_a), scalars(h_b)) * envelope    (both environments)
    (optional) h <- h + Linear(Σ_b TP(h_b ⊗ Y_ab; w_ab)) / sqrt(avg pairs)   (num_interactions)
    x_ab = [TP(h_b ⊗ Y_ab), TP(h_a ⊗ Y_ab), h_a ⊙ h_b (channel-wise TP)]   all with w_ab
    M_ab = cart(Linear(x_ab) -> 0e+1e+2e)              [P, 3, 3]
    N_a  = cart(Linear(h_a) + Linear(Σ_b x_ab) -> 0e+2e) [N, 3, 3]
    H_ab = M_ab + M_baᵀ  (a != b),   H_aa = N_a + N_aᵀ   (symmetric by construction)

Because every ingredient is an e3nn equivariant operation of node irreps and pair vectors, the
blocks rotate as R H_ab Rᵀ; with ``parity`` respected (the ``1e`` part comes from odd x odd
products), they are also O(3)-equivariant when the backbone is.

How it is evaluated. The modules above hold the parameters (their names are those of saved
heads); the forward pass evaluates the same formulas in an order that never forms the wide
per-pair features. Every map after a tensor product is linear, so:

- ``pair_out`` and ``node_pair_out`` act on x_ab path by path: their weights are folded, per
  tensor-product path and output irrep, into the last layer of the weight MLP, which then
  gives per pair the channel coefficients of each (path, block component) directly. A pair
  yields 15 numbers (M_ab and its term of N_a) instead of x_ab's (``74 x channels`` for
  ``0e + 1o`` hidden features); ``Linear(Σ_b x_ab) = Σ_b Linear(x_ab)`` gives the diagonal.
- Paths whose output irrep no linear map reads (e.g. ``1o``, ``2o`` outputs of the final
  products, ``1e``/``2e`` messages for a ``0e + 1o`` hidden space) are not evaluated, nor the
  MLP weights that feed them.
- Interaction messages are summed per atom before their (per-atom) linear map, as before.
- Pairs are evaluated in chunks when autograd records nothing (inference): the head's working
  memory is then bounded by ``memory_budget_gb`` (see :mod:`hip_head.memory`), and a request
  that cannot fit stops with :class:`~hip_head.errors.HeadMemoryError` before allocating.

The results equal the e3nn modules' composition up to floating-point rounding (float64:
~1e-15 relative).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from hip_head._e3nn import ExactConstantsMixin, float64_default, o3
from hip_head.cartesian import BLOCK_IRREPS, SYMMETRIC_BLOCK_IRREPS, irreps_to_cartesian
from hip_head.graph import AtomicGraph, PairGraph, build_pair_graph
from hip_head.memory import HeadMemoryEstimate, plan_head_memory
from hip_head.radial import BesselBasis, PolynomialEnvelope

#: Irreps the hidden node features may hold (l <= 2, both parities).
_HIDDEN_CANDIDATES = ("0e", "1o", "1e", "2e", "2o", "0o")
#: Irreps of ``hidden_irreps="full"``: every l <= 2 irrep a symmetric Hessian block can use
#: (0e, 2e) and the vectors and pseudo-vectors that build them.
_FULL_HIDDEN = ("0e", "1o", "1e", "2e")
#: Evaluation plans of each head, by (diagonal mode[, dtype, device]): derived from the modules'
#: structure, held outside the modules so that they are never pickled, saved or compared.
_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()


@dataclass
class HessianBlocks:
    """The head's output: the non-zero 3x3 blocks of the Hessian, eV/Å².

    Attributes:
        diagonal: [N, 3, 3] symmetric on-site blocks H_aa.
        offdiagonal: [P, 3, 3] blocks H_ab for each ordered pair (a, b) of ``pairs``;
            ``offdiagonal[reverse[k]]`` is exactly ``offdiagonal[k]ᵀ``. In periodic cells
            smaller than twice the cutoff, the blocks of the periodic images of one pair (and
            of an atom with its own images) add up into the Hessian (see
            :mod:`hip_head.assemble`).
        pairs: the pair graph (indices [2, P], reverse [P], image shifts [P, 3]).
    """

    diagonal: torch.Tensor
    offdiagonal: torch.Tensor
    pairs: PairGraph

    def to(self, dtype: torch.dtype) -> HessianBlocks:
        """The same blocks in ``dtype`` (e.g. back to float32 after a bf16 autocast head)."""
        if self.diagonal.dtype == dtype and self.offdiagonal.dtype == dtype:
            return self
        return HessianBlocks(self.diagonal.to(dtype), self.offdiagonal.to(dtype), self.pairs)


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


class _RadialMLP(nn.Module):
    """Per-pair weights from distance and both atoms' invariants; zero beyond the cutoff."""

    def __init__(self, num_in: int, hidden: int, num_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, num_out, bias=False),
        )

    def forward(self, pair_scalars: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """[P, num_out] weights of [P, num_in] pair scalars and the [P] envelope."""
        return self.net(pair_scalars) * envelope.unsqueeze(-1)

    def hidden(self, pair_scalars: torch.Tensor) -> torch.Tensor:
        """[P, hidden] activations that the last (linear, bias-free) layer reads."""
        return self.net[:-1](pair_scalars)

    @property
    def last(self) -> torch.Tensor:
        """[num_out, hidden] weight of the last layer."""
        return self.net[-1].weight


class PairInteraction(nn.Module):
    """One equivariant message-passing update of node features on the pair graph.

    h_a <- h_a + Linear(Σ_b TP(h_b ⊗ Y_ab; w_ab)) / norm, with w_ab from the radial MLP. Only
    the paths whose output irreps the linear map reads are evaluated (see :class:`_MessagePlan`).
    """

    def __init__(self, hidden, irreps_sh, lmax: int, radial_in: int, radial_hidden: int):
        super().__init__()
        self.tp = _channelwise_tensor_product(hidden, irreps_sh, lmax, "uvu")
        self.radial = _RadialMLP(radial_in, radial_hidden, self.tp.weight_numel)
        self.linear = o3().Linear(self.tp.irreps_out, hidden)

    def plan(self) -> _MessagePlan:
        """The (float64, CPU) evaluation plan of this interaction."""
        return _message_plan(self.tp, self.linear, self.tp.irreps_in2)

    def messages(
        self,
        h_sender: torch.Tensor,
        sh: torch.Tensor,
        pair_scalars: torch.Tensor,
        envelope: torch.Tensor,
        plan: _MessagePlan,
    ) -> list[torch.Tensor]:
        """Messages of a set of pairs, one tensor per group of the plan.

        Args:
            h_sender: [P, hidden.dim] features of atom b of each pair.
            sh: [P, sh_dim] spherical harmonics of r̂_ab.
            pair_scalars: [P, radial_in] radial basis and both atoms' scalars.
            envelope: [P] cutoff envelope.
            plan: :meth:`plan` on the features' device and dtype.

        Returns:
            Per group, [P, mul * width] messages (to be summed over b for each atom a).
        """
        # The envelope scales the last layer's input instead of its (wider) output.
        hidden = self.radial.hidden(pair_scalars) * envelope.unsqueeze(-1)
        p = sh.shape[0]
        out = []
        for g in plan.groups:
            harmonics = (sh @ g.harmonics).view(p, g.dim, g.width)
            x = h_sender[:, g.features].reshape(p, g.mul, g.dim)
            weights = hidden @ self.radial.last[g.weight_rows].T  # [p, mul * width]
            # scalars (dim 1): an outer product, cheaper broadcast than as a batched product
            products = x * harmonics if g.dim == 1 else torch.bmm(x, harmonics)
            out.append(products.reshape(p, -1) * weights)
        return out

    def update(
        self, h: torch.Tensor, aggregated: list[torch.Tensor], plan: _MessagePlan, norm: float
    ) -> torch.Tensor:
        """h + Linear(aggregated messages) / norm; ``aggregated`` as :meth:`messages`, summed
        per atom ([N, mul * width] per group)."""
        summed = torch.cat(aggregated, dim=-1)
        destination = torch.cat([g.destination for g in plan.groups])
        full = summed.new_zeros(h.shape[0], plan.out_dim).index_add(1, destination, summed)
        return h + self.linear(full) / norm

    def forward(self, h, sh, pair_scalars, envelope, pairs: PairGraph, norm: float):
        """The update over every pair of ``pairs`` at once (h [N, hidden.dim] -> same)."""
        plan = _convert(self.plan(), h.dtype, h.device)
        a, b = pairs.index
        messages = self.messages(h[b], sh, pair_scalars, envelope, plan)
        aggregated = [m.new_zeros(h.shape[0], m.shape[1]).index_add(0, a, m) for m in messages]
        return self.update(h, aggregated, plan, norm)


class HessianReadout(ExactConstantsMixin, nn.Module):
    """SE(3)-equivariant head that predicts the Hessian blocks from node irreps.

    Args:
        node_irreps: e3nn irreps of the node features the adapter provides (l <= 2 used;
            must include ``0e`` scalars).
        channels: multiplicity of each hidden irrep.
        hessian_cutoff: pair cutoff, Å; pairs beyond it have exactly zero blocks.
            ``float("inf")`` gives the complete graph within each molecule.
        num_interactions: equivariant message-passing updates on the pair graph before the
            blocks are read out (>= 1 lets scalar-only backbones produce l = 1, 2 content).
        num_radial: number of Bessel radial functions.
        radial_hidden: width of the radial/weight MLP.
        avg_num_pairs: typical number of partners per atom (normalises sums).
        diagonal: ``"learned"`` (H_aa from node and aggregated pair features) or
            ``"sum_rule"`` (H_aa = -sym(Σ_b H_ab), the translation-invariance sum rule).
        hidden_irreps: ``"backbone"`` (the hidden features hold the l <= 2 irreps the backbone
            provides, e.g. only ``0e + 1o`` for a MACE with ``32x0e+32x1o``) or ``"full"``
            (``0e + 1o + 1e + 2e`` whatever the backbone provides; the head's interactions fill
            the parts the backbone lacks, so it needs ``num_interactions >= 1``).
        block_scale: eV/Å² per unit of the head's raw output: the blocks are the raw,
            unit-scale e3nn outputs times this. Setting it to the labels' RMS (fine-tuning's
            ``block_scale: auto``) starts training at the right magnitude (diagonal entries of
            molecular Hessians are ~20 eV/Å²).

    Cost: time and memory grow with the number of pairs P within ``hessian_cutoff``. In
    inference (autograd recording nothing) pairs are evaluated in chunks, so the working memory
    stays within a budget (``forward(..., memory_budget_gb=...)``); with autograd recording, all
    pairs are evaluated at once and their activations are kept for the backward pass.
    :meth:`estimate_memory` gives the estimate the forward pass checks before it allocates.
    """

    #: Class default, so heads pickled before ``block_scale`` existed still load and run.
    block_scale: float = 1.0

    def __init__(
        self,
        node_irreps,
        channels: int = 16,
        hessian_cutoff: float = 12.0,
        num_interactions: int = 1,
        num_radial: int = 8,
        radial_hidden: int = 64,
        avg_num_pairs: float = 16.0,
        diagonal: str = "learned",
        hidden_irreps: str = "backbone",
        block_scale: float = 1.0,
    ) -> None:
        super().__init__()
        dtype = torch.get_default_dtype()
        with float64_default():  # e3nn constants built exactly; see ExactConstantsMixin
            if diagonal not in ("learned", "sum_rule"):
                raise ValueError(f"diagonal must be 'learned' or 'sum_rule', got {diagonal!r}")
            irreps_in = o3().Irreps(node_irreps).simplify()
            if not any(ir.l == 0 and ir.p == 1 for _, ir in irreps_in):
                raise ValueError(f"node irreps {irreps_in} hold no 0e scalars; the head needs them")
            if hidden_irreps not in ("backbone", "full"):
                raise ValueError(
                    f"hidden_irreps must be 'backbone' or 'full', got {hidden_irreps!r}"
                )
            present = {str(ir) for _, ir in irreps_in if ir.l <= 2}
            if hidden_irreps == "full":
                present |= set(_FULL_HIDDEN)
            hidden = o3().Irreps([(channels, ir) for ir in _HIDDEN_CANDIDATES if ir in present])
            self.node_irreps = irreps_in
            self.hidden_irreps = hidden.sort().irreps.simplify()
            self.hessian_cutoff = float(hessian_cutoff)
            self.block_scale = float(block_scale)
            self.diagonal_mode = diagonal
            self.norm = math.sqrt(avg_num_pairs)
            self.lmax = 2

            self.irreps_sh = o3().Irreps.spherical_harmonics(2)
            self.spherical_harmonics = o3().SphericalHarmonics(
                self.irreps_sh, normalize=True, normalization="component"
            )
            self.node_linear = o3().Linear(irreps_in, self.hidden_irreps)
            self.register_buffer("scalar_mask", _scalar_mask(self.hidden_irreps), persistent=False)
            num_scalars = int(self.scalar_mask.sum())
            self.radial_basis = BesselBasis(self.hessian_cutoff, num_radial)
            self.envelope = PolynomialEnvelope(self.hessian_cutoff)
            radial_in = num_radial + 2 * num_scalars

            self.interactions = nn.ModuleList(
                PairInteraction(
                    self.hidden_irreps, self.irreps_sh, self.lmax, radial_in, radial_hidden
                )
                for _ in range(num_interactions)
            )
            self.tp_sender = _channelwise_tensor_product(
                self.hidden_irreps, self.irreps_sh, self.lmax, "uvu"
            )
            self.tp_receiver = _channelwise_tensor_product(
                self.hidden_irreps, self.irreps_sh, self.lmax, "uvu"
            )
            self.tp_pair = _channelwise_tensor_product(
                self.hidden_irreps, self.hidden_irreps, self.lmax, "uuu"
            )
            self.pair_irreps = (
                self.tp_sender.irreps_out + self.tp_receiver.irreps_out + self.tp_pair.irreps_out
            )
            num_weights = (
                self.tp_sender.weight_numel
                + self.tp_receiver.weight_numel
                + self.tp_pair.weight_numel
            )
            self.pair_radial = _RadialMLP(radial_in, radial_hidden, num_weights)
            self.pair_out = o3().Linear(self.pair_irreps, o3().Irreps(BLOCK_IRREPS))
            self.node_out = o3().Linear(self.hidden_irreps, o3().Irreps(SYMMETRIC_BLOCK_IRREPS))
            self.node_pair_out = o3().Linear(self.pair_irreps, o3().Irreps(SYMMETRIC_BLOCK_IRREPS))
        self.record_exact_constants()
        self.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"node_irreps={self.node_irreps}, hidden={self.hidden_irreps}, "
            f"cutoff={self.hessian_cutoff} Å, interactions={len(self.interactions)}, "
            f"diagonal={self.diagonal_mode}"
        )

    # ------------------------------------------------------------------ evaluation plans
    def _plans(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[list[_MessagePlan], _ReadoutPlan]:
        """The interactions' and the final products' plans in ``dtype`` on ``device`` (cached;
        the plans hold index and Wigner-3j tensors only, no parameters)."""
        cache = _PLANS.setdefault(self, {})
        key = (self.diagonal_mode, dtype, device)
        if key not in cache:
            master = cache.get(self.diagonal_mode)
            if master is None:
                master = cache[self.diagonal_mode] = self._build_plans()
            cache[key] = _convert(master, dtype, device)
        return cache[key]

    def _build_plans(self) -> tuple[list[_MessagePlan], _ReadoutPlan]:
        messages = [interaction.plan() for interaction in self.interactions]
        # Weights and blocks of x_ab = [sender, receiver, pair] follow one another.
        sender, receiver = self.tp_sender, self.tp_receiver
        weights = sender.weight_numel + receiver.weight_numel
        blocks = len(sender.irreps_out) + len(receiver.irreps_out)
        products = [
            (sender, 1, False, 0, 0),
            (receiver, 0, False, sender.weight_numel, len(sender.irreps_out)),
            (self.tp_pair, 0, True, weights, blocks),
        ]
        targets = [(self.pair_out, 0, 0)]
        if self.diagonal_mode == "learned":
            targets.append(
                (self.node_pair_out, self.pair_out.irreps_out.dim, self.pair_out.weight_numel)
            )
        return messages, _readout_plan(products, targets, self.irreps_sh)

    def _target_weights(self) -> torch.Tensor:
        """The weights of the linear maps folded into the final products, concatenated."""
        if self.diagonal_mode == "learned":
            return torch.cat([self.pair_out.weight, self.node_pair_out.weight])
        return self.pair_out.weight

    # ------------------------------------------------------------------ memory
    def _floats_per_pair(self) -> tuple[int, int]:
        """(working set, activations kept for backward) per pair, in numbers of the dtype.

        Working set: the largest set of per-pair tensors alive at once while one chunk is
        evaluated. Kept: what autograd stores per pair when every pair is evaluated at once.
        """
        messages, readout = self._plans(torch.float64, torch.device("cpu"))
        geometry = self.irreps_sh.dim + 1 + 2 * self.radial_basis.frequencies.numel()
        scalars = self.pair_radial.net[0].in_features
        hidden = 2 * self.pair_radial.net[0].out_features
        dim_h = self.hidden_irreps.dim
        passes = []
        for plan in messages:
            groups = sum(g.dim * g.width + 3 * g.mul * g.width for g in plan.groups)
            passes.append(dim_h + groups)
        features = int(readout.blocks.shape[0])
        groups = 0
        for g in readout.groups:
            if g.channelwise:
                groups += g.mul * g.dim1 * g.dim2 + g.rows * g.dim1 * g.dim2
            else:
                groups += g.rows * g.dim1
        passes.append(
            int(readout.weight_rows.numel()) + 2 * dim_h + groups + 2 * features + readout.out_dim
        )
        per_pass = geometry + scalars + hidden
        work = per_pass + max(passes)
        kept = sum(per_pass + p for p in passes)
        return work, kept

    def estimate_memory(
        self,
        num_atoms: int,
        num_pairs: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        requires_grad: bool = False,
        memory_budget_gb: float | None = None,
    ) -> HeadMemoryEstimate:
        """Memory the head will need, and the chunk size that keeps it within the budget.

        Args:
            num_atoms: N, atoms in the batch.
            num_pairs: P, ordered pairs within ``hessian_cutoff`` (``PairGraph.num_pairs``).
            dtype: dtype of the evaluation (default: the head's).
            device: where it runs (default: the head's device).
            requires_grad: autograd records the head (training, or gradients requested): all
                pairs at once, activations kept.
            memory_budget_gb: GiB the head may use (default: a fraction
                :data:`hip_head.memory.DEFAULT_MEMORY_FRACTION` of the available memory).

        Returns:
            :class:`~hip_head.memory.HeadMemoryEstimate` (bytes, chunk size in pairs).

        Raises:
            HeadMemoryError: the head would not fit, even in chunks of
                :data:`hip_head.memory.MIN_CHUNK_PAIRS` pairs (inference) or with all pairs at
                once (autograd recording). Nothing has been allocated.
        """
        parameter = next(self.parameters())
        dtype = dtype or parameter.dtype
        device = torch.device(device) if device is not None else parameter.device
        work, kept = self._floats_per_pair()
        node_floats = 4 * self.hidden_irreps.dim + sum(
            plan.out_dim for plan in self._plans(torch.float64, torch.device("cpu"))[0]
        )
        return plan_head_memory(
            num_atoms=num_atoms,
            num_pairs=num_pairs,
            dtype=dtype,
            device=device,
            work_floats_per_pair=work,
            kept_floats_per_pair=kept,
            floats_per_atom=node_floats,
            requires_grad=requires_grad,
            memory_budget_gb=memory_budget_gb,
        )

    # ------------------------------------------------------------------ forward
    def _geometry(
        self, pairs: PairGraph, chunk: slice
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a [p], b [p], Y(r̂) [p, 9], envelope [p], basis x envelope [p, B]) of a chunk."""
        a, b = pairs.index[:, chunk]
        lengths = pairs.lengths[chunk]
        sh = self.spherical_harmonics(pairs.vectors[chunk])
        envelope = self.envelope(lengths)
        basis = self.radial_basis(lengths) * envelope.unsqueeze(-1)
        return a, b, sh, envelope, basis

    def _interaction(
        self,
        interaction: PairInteraction,
        plan: _MessagePlan,
        h: torch.Tensor,
        pairs: PairGraph,
        chunks: list[slice],
    ) -> torch.Tensor:
        """One interaction's update of h [N, hidden.dim], messages summed chunk by chunk."""
        scalars = h[:, self.scalar_mask]
        aggregated: list[torch.Tensor] = []
        for chunk in chunks:
            a, b, sh, envelope, basis = self._geometry(pairs, chunk)
            pair_scalars = torch.cat([basis, scalars[a], scalars[b]], dim=-1)
            messages = interaction.messages(h[b], sh, pair_scalars, envelope, plan)
            if not aggregated:
                aggregated = [m.new_zeros(h.shape[0], m.shape[1]) for m in messages]
            for total, m in zip(aggregated, messages):
                total.index_add_(0, a, m)
        return interaction.update(h, aggregated, plan, self.norm)

    def _pair_outputs(
        self,
        plan: _ReadoutPlan,
        folded: torch.Tensor,
        h: torch.Tensor,
        pairs: PairGraph,
        chunk: slice,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pair_out(x_ab)`` and ``node_pair_out(x_ab)`` of a chunk, without forming x_ab.

        Args:
            plan: the final products' plan.
            folded: [R * mul, radial_hidden] last MLP layer times the linear maps' weights.
            h: [N, hidden.dim] node features.
            pairs: the pair graph.
            chunk: the pairs to evaluate.

        Returns:
            (a [p], [p, out_dim]: the 9 irrep components of M_ab, then (``"learned"``
            diagonal) the 6 of this pair's term of N_a).
        """
        a, b, sh, envelope, basis = self._geometry(pairs, chunk)
        scalars = h[:, self.scalar_mask]
        pair_scalars = torch.cat([basis, scalars[a], scalars[b]], dim=-1)
        hidden = self.pair_radial.hidden(pair_scalars) * envelope.unsqueeze(-1)
        coefficients = hidden @ folded.T  # [p, R * mul]
        p = sh.shape[0]
        inputs = (h[a], h[b])
        features = []
        for g in plan.groups:
            c = coefficients[:, g.columns].reshape(p, g.rows, g.mul)
            first = inputs[g.atom][:, g.first].reshape(p, g.mul, g.dim1)
            if g.channelwise:
                second = inputs[1][:, g.second].reshape(p, g.mul, g.dim2)
                outer = (first.unsqueeze(-1) * second.unsqueeze(-2)).reshape(p, g.mul, -1)
                features.append(torch.bmm(c, outer).reshape(p, -1))
            else:
                q = torch.bmm(c, first)  # [p, rows, dim1]
                for rows, harmonics in g.parts:
                    y = sh[:, harmonics]
                    features.append((q[:, rows, :, None] * y[:, None, None, :]).reshape(p, -1))
        return a, torch.cat(features, dim=-1) @ plan.blocks

    def forward(
        self,
        node_feats: torch.Tensor,
        graph: AtomicGraph,
        pairs: PairGraph | None = None,
        *,
        memory_budget_gb: float | None = None,
    ) -> HessianBlocks:
        """Predict the Hessian blocks.

        Args:
            node_feats: [N, node_irreps.dim] adapter features.
            graph: the batch (positions [N, 3] Å).
            pairs: a prebuilt pair graph (built from ``graph`` with ``hessian_cutoff`` if None).
            memory_budget_gb: GiB of memory the head may use. In inference (autograd recording
                nothing) pairs are evaluated in chunks sized to fit it; with autograd recording
                all pairs are evaluated at once and must fit it. Default: a fraction
                (:data:`hip_head.memory.DEFAULT_MEMORY_FRACTION`) of the available memory.

        Returns:
            :class:`HessianBlocks` in eV/Å²: diagonal [N, 3, 3] and off-diagonal [P, 3, 3].

        Raises:
            HeadMemoryError: the estimate (:meth:`estimate_memory`) exceeds the budget or the
                available memory; raised before the head allocates anything per pair.
        """
        if pairs is None:
            pairs = build_pair_graph(graph, self.hessian_cutoff)
        num_atoms, num_pairs = graph.num_atoms, pairs.num_pairs
        recording = torch.is_grad_enabled() and (
            node_feats.requires_grad
            or pairs.vectors.requires_grad
            or any(p.requires_grad for p in self.parameters())
        )
        estimate = self.estimate_memory(
            num_atoms,
            num_pairs,
            dtype=torch.promote_types(node_feats.dtype, next(self.parameters()).dtype),
            device=node_feats.device,
            requires_grad=recording,
            memory_budget_gb=memory_budget_gb,
        )
        h = self.node_linear(node_feats)
        learned = self.diagonal_mode == "learned"
        if num_pairs:
            message_plans, plan = self._plans(h.dtype, h.device)
            size = estimate.chunk_pairs
            chunks = [slice(s, min(s + size, num_pairs)) for s in range(0, num_pairs, size)]
            for interaction, message_plan in zip(self.interactions, message_plans):
                h = self._interaction(interaction, message_plan, h, pairs, chunks)
            scale = self._target_weights()[plan.linear_index] * plan.linear_scale
            folded = self.pair_radial.last[plan.weight_rows] * scale.unsqueeze(-1)
            if len(chunks) == 1:
                a, outputs = self._pair_outputs(plan, folded, h, pairs, chunks[0])
                block_irreps = outputs[:, :9]
                node_sum = outputs.new_zeros(num_atoms, plan.out_dim - 9)
                node_sum = node_sum.index_add(0, a, outputs[:, 9:])
            else:
                block_irreps = node_sum = None
                for chunk in chunks:
                    a, outputs = self._pair_outputs(plan, folded, h, pairs, chunk)
                    if block_irreps is None:
                        block_irreps = outputs.new_empty(num_pairs, 9)
                        node_sum = outputs.new_zeros(num_atoms, plan.out_dim - 9)
                    block_irreps[chunk] = outputs[:, :9]
                    node_sum.index_add_(0, a, outputs[:, 9:])
            m = self.block_scale * irreps_to_cartesian(block_irreps)  # [P, 3, 3], M_ab
            offdiagonal = m + m[pairs.reverse].transpose(-1, -2)  # H_ab = M_ab + M_baᵀ
        else:
            offdiagonal = h.new_zeros(0, 3, 3)
            node_sum = h.new_zeros(num_atoms, self.node_pair_out.irreps_out.dim if learned else 0)

        if not learned:
            row_sum = torch.zeros(num_atoms, 3, 3, dtype=offdiagonal.dtype, device=h.device)
            if num_pairs:
                row_sum = row_sum.index_add(0, pairs.index[0], offdiagonal)
            diagonal = -0.5 * (row_sum + row_sum.transpose(-1, -2))
        else:
            n = self.block_scale * irreps_to_cartesian(self.node_out(h) + node_sum / self.norm)
            diagonal = n + n.transpose(-1, -2)  # H_aa = N_a + N_aᵀ
        return HessianBlocks(diagonal=diagonal, offdiagonal=offdiagonal, pairs=pairs)
